package events_test

import (
	"context"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/db"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// TestGroupCommitKeepsEachAppendsCheckAndResult: rounds of 64 concurrent appends, 48 to
// streams of their own and 16 to one shared stream at the same expected version. In each
// round every own-stream append commits, exactly one shared one wins and the others are
// CONFLICT; every result matches the stored rows; appends did share transactions; and
// in (transaction id, position) order, the relay's order, every stream's versions rise.
func TestGroupCommitKeepsEachAppendsCheckAndResult(t *testing.T) {
	d := testenv.MustDatabase(t)
	s := eventstore.NewStore(d.Pool)
	defer s.Close()
	ctx := context.Background()
	shared := uuid.New()
	_, err := appendUser(t, s, shared, 0, userCreated("shared"))
	require.NoError(t, err)

	type outcome struct {
		stream uuid.UUID
		res    events.AppendResult
		err    error
	}
	version := 1
	for round := range 20 {
		var wg sync.WaitGroup
		out := make([]outcome, 64)
		start := make(chan struct{})
		for i := range out {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				stream, expected, ev := uuid.New(), 0, userCreated("own")
				if i%4 == 0 {
					stream, expected, ev = shared, version, events.UserUpdated{Changes: map[string]events.Change{"name": {Old: "a", New: "b"}}}
				}
				res, err := appendUser(t, s, stream, expected, ev)
				out[i] = outcome{stream, res, err}
			}()
		}
		close(start)
		wg.Wait()
		wins := 0
		for i, o := range out {
			if o.stream == shared {
				switch {
				case o.err == nil:
					wins++
					assert.Equal(t, version+1, o.res.Version)
				default:
					assert.Equal(t, apperr.CodeConflict, apperr.CodeOf(o.err), "round %d: %v", round, o.err)
				}
				continue
			}
			require.NoError(t, o.err, "round %d append %d", round, i)
			assert.Equal(t, 1, o.res.Version)
			var position int64
			require.NoError(t, d.Pool.QueryRow(ctx, `SELECT position FROM events WHERE stream_id = $1 AND stream_version = 1`,
				o.stream).Scan(&position))
			assert.Equal(t, position, o.res.Position, "the result's position is the stored one")
		}
		require.Equal(t, 1, wins, "round %d: exactly one append at the shared stream's version wins", round)
		version++
	}

	var events_, shared_, transactions int
	require.NoError(t, d.Pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE stream_id = $1),
		count(DISTINCT transaction_id) FROM events`, shared).Scan(&events_, &shared_, &transactions))
	assert.Equal(t, 1+20*48+20, events_, "every own-stream append and one shared append per round")
	assert.Equal(t, 21, shared_)
	assert.Less(t, transactions, events_, "appends were committed together")
	t.Logf("%d events in %d transactions", events_, transactions)

	// The relay's order keeps every stream's order.
	var disorder int
	require.NoError(t, d.Pool.QueryRow(ctx, `SELECT count(*) FROM (
		SELECT stream_version - lag(stream_version) OVER (PARTITION BY stream_id ORDER BY transaction_id, position) AS step
		FROM events) s WHERE step <> 1`).Scan(&disorder))
	assert.Zero(t, disorder)
}

// TestGroupCommitRunsOnItsGenericPlan: on a pool of one connection, rounds of concurrent
// appends are committed in groups; the group's statement, prepared on that connection,
// was never planned for its arguments (PostgreSQL's custom plans), and the setting that
// makes it so ended with each group's transaction.
func TestGroupCommitRunsOnItsGenericPlan(t *testing.T) {
	d := testenv.MustDatabase(t)
	ctx := context.Background()
	pool, err := db.Open(ctx, d.URL, 1)
	require.NoError(t, err)
	defer pool.Close()
	s := eventstore.NewStore(pool)
	defer s.Close()
	for range 10 {
		var wg sync.WaitGroup
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := appendUser(t, s, uuid.New(), 0, userCreated("own"))
				assert.NoError(t, err)
			}()
		}
		wg.Wait()
	}
	var generic, custom int64
	require.NoError(t, pool.QueryRow(ctx, `SELECT coalesce(sum(generic_plans), 0), coalesce(sum(custom_plans), 0)
		FROM pg_prepared_statements WHERE statement LIKE '%WITH ok AS%'`).Scan(&generic, &custom))
	assert.Positive(t, generic, "groups were committed, on the generic plan")
	assert.Zero(t, custom, "the group's statement was never planned for its arguments")
	var mode string
	require.NoError(t, pool.QueryRow(ctx, `SHOW plan_cache_mode`).Scan(&mode))
	assert.Equal(t, "auto", mode, "the connection's own setting is untouched")
}
