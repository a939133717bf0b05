package projections_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
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

// A database user that does not own the indexes cannot merge their lists: Run says so
// once and stops, and PostgreSQL merges them in the inserts as before.
func TestPendingListsStopWithoutThePrivilege(t *testing.T) {
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	role := "chatbotd_reader_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	_, err := d.Pool.Exec(ctx, `CREATE ROLE `+role+` LOGIN`)
	require.NoError(t, err)
	cfg, err := pgxpool.ParseConfig(d.URL)
	require.NoError(t, err)
	cfg.ConnConfig.User = role
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		pool.Close()
		_, _ = d.Pool.Exec(context.Background(), `DROP ROLE `+role)
	})

	_, err = (&projections.PendingLists{Pool: pool}).Merge(ctx)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	assert.Equal(t, "42501", pgErr.Code, "insufficient privilege")

	var logged bytes.Buffer
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	lists := &projections.PendingLists{Pool: pool, Interval: 10 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logged, nil))}
	require.NoError(t, lists.Run(rctx))
	assert.NoError(t, rctx.Err(), "Run stopped on its own")
	assert.Equal(t, 1, strings.Count(logged.String(), "GIN pending lists not merged"), "said once: %s", logged.String())
}
