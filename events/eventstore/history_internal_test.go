package eventstore

import (
	"context"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// Reading in commit order walks the (transaction_id, position) index: no sort of the
// log, whatever its size (the relay and the chainer read this way on every batch).
func TestHistoryReadsFollowTheCommitOrderIndex(t *testing.T) {
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	org := uuid.New()
	for _, f := range []HistoryFilter{{}, {Organization: &org}, {TypePatterns: []string{"user.*"}}} {
		sql, args := historyQuery(f, Checkpoint{TransactionID: 1, Position: 1}, 500)
		tx, err := d.Pool.Begin(ctx)
		require.NoError(t, err)
		// An empty table favours other plans: take them off, so that a sort shows only where
		// the index cannot give the order.
		_, err = tx.Exec(ctx, `SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; SET LOCAL enable_sort = off`)
		require.NoError(t, err)
		plan := explain(t, tx, sql, args...)
		require.NoError(t, tx.Rollback(ctx))
		assert.NotContains(t, plan, "Sort", "%+v:\n%s", f, plan)
	}
}

// explain is PostgreSQL's plan of sql with args, in q (a transaction with its settings).
func explain(t *testing.T, q Querier, sql string, args ...any) string {
	t.Helper()
	rows, err := q.Query(context.Background(), `EXPLAIN `+sql, args...)
	require.NoError(t, err)
	var plan []string
	for rows.Next() {
		var line string
		require.NoError(t, rows.Scan(&line))
		plan = append(plan, line)
	}
	require.NoError(t, rows.Err())
	return strings.Join(plan, "\n")
}
