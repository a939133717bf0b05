package main

import (
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/config"
	"github.com/chatbotsaas/chatbotd/projections"
)

// The projectors (the group, and each member alone when an earlier layout drains) apply
// PROJECTOR_BATCH_SIZE events a batch; the reactors, whose competing consumers each hold
// a batch, REACTOR_BATCH_SIZE.
func TestProjectorsAndReactorsTakeTheirOwnBatchSizes(t *testing.T) {
	cfg, err := config.Load([]string{"PROJECTOR_BATCH_SIZE=321", "REACTOR_BATCH_SIZE=45"})
	require.NoError(t, err)
	d := &deps{cfg: cfg, logger: slog.New(slog.DiscardHandler)}
	runners, err := d.runners()
	require.NoError(t, err)
	reactor := map[string]bool{}
	for _, p := range projections.Parts() {
		reactor[p.Name] = p.Reactor
	}
	var reactors int
	for _, r := range runners {
		if r.Name() == projections.GroupName {
			assert.Equal(t, 321, r.BatchSize(), r.Name())
			continue
		}
		require.True(t, reactor[r.Name()], "%s runs on its own but is no reactor", r.Name())
		assert.Equal(t, 45, r.BatchSize(), r.Name())
		reactors++
	}
	assert.Positive(t, reactors)
	retired, err := d.retiredRunners()
	require.NoError(t, err)
	require.NotEmpty(t, retired)
	for _, r := range retired {
		assert.Equal(t, 321, r.BatchSize(), r.Name())
	}
}
