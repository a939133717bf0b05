package measure

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestWriteBlockReplacesOnlyItsBlock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "B.md")
	require.NoError(t, os.WriteFile(path, []byte("# Title\n\nhand-written\n"), 0o644))
	require.NoError(t, WriteBlock(path, "soak", "## Soak", "first"))
	require.NoError(t, WriteBlock(path, "bench", "", "figures"))
	require.NoError(t, WriteBlock(path, "soak", "## Soak", "second"))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "# Title\n\nhand-written\n\n## Soak\n\n<!-- soak:begin (written by make soak) -->\nsecond\n<!-- soak:end -->\n\n"+
		"<!-- bench:begin (written by make bench) -->\nfigures\n<!-- bench:end -->\n", string(b))
}

func TestPoll(t *testing.T) {
	ctx := context.Background()
	calls := 0
	require.NoError(t, Poll(ctx, time.Second, time.Millisecond, func() (bool, error) { calls++; return calls == 3, nil }))
	assert.Equal(t, 3, calls)
	assert.ErrorContains(t, Poll(ctx, 20*time.Millisecond, time.Millisecond, func() (bool, error) { return false, nil }), "not done within")
	broken := errors.New("broken")
	assert.ErrorIs(t, Poll(ctx, time.Second, time.Millisecond, func() (bool, error) { return false, broken }), broken)
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	assert.ErrorIs(t, Poll(cancelled, time.Second, time.Millisecond, func() (bool, error) { return false, nil }), context.Canceled)
}
