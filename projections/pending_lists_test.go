package projections_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/db"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
	"github.com/chatbotsaas/chatbotd/projections"
)

// The chatbots' search entries go into their GIN index's pending list; a pass merges
// every GIN index of the schema, the chatbots' list among them, and leaves nothing for the
// next. While another process holds the pass, a pass merges nothing; Run merges on its
// own, every Interval.
func TestPendingListsAreMergedBesideTheBatches(t *testing.T) {
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	addChatbots := func(n int) {
		t.Helper()
		_, err := d.Pool.Exec(ctx, `INSERT INTO chatbots (id, organization_id, name, description, welcome_message, fallback_message,
				status, responder, version, created_at, updated_at)
			SELECT gen_random_uuid(), $1, 'Support bot ' || i, 'Answers questions about order ' || i, 'Hi', 'Sorry',
				'draft', '{"type": "knowledge_base"}', 1, now(), now()
			FROM generate_series(1, $2) AS i`, uuid.New(), n)
		require.NoError(t, err)
	}
	addChatbots(2000)
	lists := &projections.PendingLists{Pool: d.Pool}

	// Held elsewhere: this pass merges nothing.
	tx, err := d.Pool.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, db.LockKey("chatbotd.gin-pending-lists"))
	require.NoError(t, err)
	merged, err := lists.Merge(ctx)
	require.NoError(t, err)
	assert.Empty(t, merged)
	require.NoError(t, tx.Rollback(ctx))

	merged, err = lists.Merge(ctx)
	require.NoError(t, err)
	for _, index := range []string{"chatbots_search_idx", "users_search_idx", "users_roles_idx", "knowledge_index_search_idx"} {
		assert.Contains(t, merged, index, "every GIN index of the schema is merged")
	}
	assert.Positive(t, merged["chatbots_search_idx"], "the chatbots' entries were pending")
	merged, err = lists.Merge(ctx)
	require.NoError(t, err)
	assert.Zero(t, merged["chatbots_search_idx"], "nothing is left for the next pass")
	var found int
	require.NoError(t, d.Pool.QueryRow(ctx, `SELECT count(*) FROM chatbots WHERE search @@ to_tsquery('simple', 'order')`).Scan(&found))
	assert.Equal(t, 2000, found, "the merged entries are in the index")

	// Run merges on its own: what it leaves a pass is nothing.
	addChatbots(2000)
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- (&projections.PendingLists{Pool: d.Pool, Interval: 20 * time.Millisecond}).Run(rctx) }()
	time.Sleep(200 * time.Millisecond)
	stop()
	require.NoError(t, <-done)
	merged, err = lists.Merge(ctx)
	require.NoError(t, err)
	assert.Zero(t, merged["chatbots_search_idx"])
}
