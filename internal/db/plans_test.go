package db_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/db"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// QueryGeneric's statement runs with generic plans, and nothing after it does: on a
// pool the setting ends with the batch's own transaction, and the connection is back in
// the pool (a pool of one would wait for itself); in a transaction it lasts until the
// transaction ends, and no longer.
func TestQueryGenericPlansOnlyItsStatement(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pool, err := db.Open(ctx, testenv.MustDatabase(t).URL, 1)
	require.NoError(t, err)
	defer pool.Close()
	mode := func(q interface {
		QueryRow(context.Context, string, ...any) pgx.Row
	}) string {
		t.Helper()
		var m string
		require.NoError(t, q.QueryRow(ctx, `SELECT current_setting('plan_cache_mode')`).Scan(&m))
		return m
	}
	server := mode(pool)
	require.NotEqual(t, "force_generic_plan", server)

	got, err := db.QueryGeneric(ctx, pool, pgx.RowTo[string], `SELECT current_setting('plan_cache_mode') || $1::text`, "!")
	require.NoError(t, err)
	require.Equal(t, []string{"force_generic_plan!"}, got)
	require.Equal(t, server, mode(pool), "the next statement on the pool's one connection")

	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	got, err = db.QueryGeneric(ctx, tx, pgx.RowTo[string], `SELECT current_setting('plan_cache_mode')`)
	require.NoError(t, err)
	require.Equal(t, []string{"force_generic_plan"}, got)
	require.Equal(t, "force_generic_plan", mode(tx), "later in the same transaction")
	_, err = tx.Exec(ctx, db.DefaultPlans)
	require.NoError(t, err)
	require.Equal(t, server, mode(tx), "after DefaultPlans")
	require.NoError(t, tx.Commit(ctx))
	require.Equal(t, server, mode(pool))

	_, err = db.QueryGeneric(ctx, pool, pgx.RowTo[string], `SELECT no_such_column FROM store_identity`)
	require.Error(t, err)
	require.Equal(t, server, mode(pool), "after a failed statement")
}
