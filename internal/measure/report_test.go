package measure

import (
	"os"
	"path/filepath"
	"testing"

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
