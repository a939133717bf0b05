package reactors

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// The responder's search takes the nearest questions from the GiST index, not by sorting
// every entry of the chatbot by trigram distance, even on a connection whose prepared
// search settled on its generic plan while the table was small and never analyzed (the
// bench's case: a 1,000-entry chatbot answered first, then a 10,000-entry one trained).
// pg_stat_get_xact_function_calls counts the distance computations of the search.
func TestKnowledgeSearchNeverSortsTheWholeKnowledgeBase(t *testing.T) {
	d := testenv.MustDatabase(t)
	ctx := context.Background()
	conn, err := d.Pool.Acquire(ctx) // one connection: its prepared search and its plan
	require.NoError(t, err)
	defer conn.Release()
	train := func(bot uuid.UUID, n int) {
		t.Helper()
		_, err := conn.Exec(ctx, `INSERT INTO knowledge_index (chatbot_id, entry_id, question, answer)
			SELECT $1, gen_random_uuid(), format('How do I configure feature %s of product line %s?', i, i % 37),
				format('Open settings, choose feature %s, and follow the steps.', i)
			FROM generate_series(0, $2 - 1) AS i`, bot, n)
		require.NoError(t, err)
	}
	small, large := uuid.New(), uuid.New()
	train(small, 1000)
	for i := range 8 { // past the fifth run: the generic plan is chosen and kept
		tx, err := conn.Begin(ctx)
		require.NoError(t, err)
		_, answer, found, err := bestMatch(ctx, tx, small, fmt.Sprintf("How do I configure feature %d of product line %d?", i*7, i*7%37))
		require.NoError(t, err)
		assert.True(t, found)
		assert.Equal(t, fmt.Sprintf("Open settings, choose feature %d, and follow the steps.", i*7), answer)
		require.NoError(t, tx.Rollback(ctx))
	}
	train(large, 10000)

	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = tx.Exec(ctx, `SET LOCAL track_functions = 'all'`)
	require.NoError(t, err)
	distances := func() int64 {
		var n int64
		require.NoError(t, tx.QueryRow(ctx,
			`SELECT coalesce(pg_stat_get_xact_function_calls('similarity_dist(text,text)'::regprocedure), 0)`).Scan(&n))
		return n
	}
	question := "How do I configure feature 7000 of product line 7?" // nothing to quote (EXECUTE below)
	before := distances()
	_, answer, found, err := bestMatch(ctx, tx, large, question)
	require.NoError(t, err)
	assert.True(t, found)
	assert.Equal(t, "Open settings, choose feature 7000, and follow the steps.", answer)
	assert.Less(t, distances()-before, int64(100), "distances computed for one search of 10,000 entries")
	var sorts, jit, jitDefault string
	require.NoError(t, tx.QueryRow(ctx, `SELECT current_setting('enable_sort'), current_setting('jit'),
		(SELECT reset_val FROM pg_settings WHERE name = 'jit')`).Scan(&sorts, &jit, &jitDefault))
	assert.Equal(t, "on", sorts, "the transaction's other statements plan as before")
	assert.Equal(t, jitDefault, jit)

	// Sorts priced out make any plan cost more than JIT's thresholds: the search must not
	// compile itself (about half a second a search in a bench run, before JIT was off too).
	_, err = tx.Exec(ctx, searchPlanning)
	require.NoError(t, err)
	var plan string
	require.NoError(t, tx.QueryRow(ctx, `EXPLAIN (ANALYZE, FORMAT JSON) `+knowledgeSearch,
		large, question, orQuery(question)).Scan(&plan))
	assert.Contains(t, plan, `"Index Name": "knowledge_index_knn_idx"`)
	assert.NotContains(t, plan, `"JIT"`)
	for _, end := range searchPlanningEnd {
		_, err = tx.Exec(ctx, end)
		require.NoError(t, err)
	}

	// In the generic plan that a prepared search settles on, the question's tsquery is
	// computed once, not parsed again for each entry the full-text candidates test.
	_, err = tx.Conn().PgConn().Exec(ctx, `PREPARE generic_search(uuid, text, text) AS `+knowledgeSearch).ReadAll()
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `SET LOCAL plan_cache_mode = force_generic_plan`)
	require.NoError(t, err)
	require.NoError(t, tx.QueryRow(ctx, fmt.Sprintf(`EXPLAIN (FORMAT JSON) EXECUTE generic_search('%s', '%s', '%s')`,
		large, question, orQuery(question))).Scan(&plan))
	assert.Contains(t, plan, `"Subplan Name": "InitPlan`)
	assert.NotContains(t, plan, `@@ plainto_tsquery`, "the tsquery is not a per-row expression of a scan")

	_, _, found, err = bestMatch(ctx, tx, uuid.New(), question)
	require.NoError(t, err)
	assert.False(t, found, "a chatbot with no entries has no answer, and that is no error")
}
