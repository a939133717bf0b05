package projections

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/db"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// applyBatch is commitBatch for a test that needs only its error.
func (r *Runner) applyBatch(ctx context.Context, shares []share, envs []events.Envelope) error {
	_, err := r.commitBatch(ctx, shares, envs)
	return err
}

// counting applies nothing but counts what it is given.
type counting struct{ applied int }

func (*counting) Name() string       { return "counting" }
func (*counting) Bindings() []string { return []string{"#"} }
func (c *counting) Apply(context.Context, pgx.Tx, events.Envelope) error {
	c.applied++
	return nil
}

// A batch writes each stream's version row once: a stream new to the projection is
// inserted at the version the batch leaves it at, a known stream is raised once, and
// a stream whose events were all applied before is not written at all.
func TestBatchWritesEachStreamRowOnce(t *testing.T) {
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	store := eventstore.NewStore(d.Pool)
	org := uuid.New()
	meta := events.Meta{Actor: events.Actor{Type: events.ActorSystem}}
	stream := func(n int) []events.Envelope {
		t.Helper()
		id := uuid.New()
		for i := range n {
			_, err := store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamUser, StreamID: id, ExpectedVersion: i,
				OrganizationID: &org, Events: []events.Event{events.UserUpdated{Changes: map[string]events.Change{
					"name": {Old: "a", New: "b"}}}}, Meta: meta})
			require.NoError(t, err)
		}
		envs, err := eventstore.ReadStream(ctx, d.Pool, id, 1, n)
		require.NoError(t, err)
		require.Len(t, envs, n)
		return envs
	}
	known, done, fresh, gapped := stream(3), stream(1), stream(2), stream(3)
	p := &counting{}
	_, err := ApplyBatch(ctx, d.Pool, p, []events.Envelope{known[0], done[0]})
	require.NoError(t, err)

	tx, err := d.Pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx)
	// The counters include what the connection's earlier transactions wrote until its
	// statistics are flushed: the difference is this transaction's.
	writes := func() (inserted, updated int) {
		t.Helper()
		require.NoError(t, tx.QueryRow(ctx, `SELECT pg_stat_get_xact_tuples_inserted('projection_streams'::regclass),
			pg_stat_get_xact_tuples_updated('projection_streams'::regclass)`).Scan(&inserted, &updated))
		return inserted, updated
	}
	ins0, upd0 := writes()
	// known goes on from 1 (its v3 before its v2), done comes again, fresh is new, and
	// gapped is new with its first version missing from the batch.
	batch := []events.Envelope{known[2], known[1], done[0], fresh[0], fresh[1], gapped[2], gapped[1]}
	applied, err := applyInTx(ctx, tx, p, batch, p.Name())
	require.NoError(t, err)
	assert.Len(t, applied, 2+2+3)

	ins1, upd1 := writes()
	assert.Equal(t, 2, ins1-ins0, "the new streams, fresh and gapped, each inserted once")
	// The prelude's conflict takes each known row (known and done) with an update that
	// keeps its version: one statement for every stream's row, new or known.
	assert.Equal(t, 3, upd1-upd0, "known and done taken by the prelude, known raised once; the new ones not raised")
	// A known stream's row is locked; a new one is not locked again (the insert made it
	// this transaction's): a lock would write a WAL record per new stream.
	locked := func(e events.Envelope) bool {
		t.Helper()
		var mine bool
		require.NoError(t, tx.QueryRow(ctx, `SELECT xmax = pg_current_xact_id()::xid FROM projection_streams
			WHERE projection = 'counting' AND stream_id = $1`, e.StreamID).Scan(&mine))
		return mine
	}
	assert.True(t, locked(done[0]), "done's row is locked")
	assert.False(t, locked(fresh[0]), "fresh's row is not locked again")
	assert.False(t, locked(gapped[0]), "gapped's row is not locked again")

	rows, err := tx.Query(ctx, `SELECT stream_id, version FROM projection_streams WHERE projection = 'counting'`)
	require.NoError(t, err)
	versions := map[uuid.UUID]int{}
	for rows.Next() {
		var s uuid.UUID
		var v int
		require.NoError(t, rows.Scan(&s, &v))
		versions[s] = v
	}
	require.NoError(t, rows.Err())
	assert.Equal(t, map[uuid.UUID]int{known[0].StreamID: 3, done[0].StreamID: 1, fresh[0].StreamID: 2, gapped[0].StreamID: 3}, versions)
}

// BenchmarkBatchOfNewStreams is the runtime's own cost for a batch of 200 events that
// each start a stream (a user, a chatbot, a message): the lock, the version rows, the
// position and the commit, with a projector that writes nothing. It reports the WAL a
// batch writes too.
//
//	go test -run '^$' -bench BatchOfNewStreams -benchtime 200x ./projections
func BenchmarkBatchOfNewStreams(b *testing.B) {
	ctx := context.Background()
	d := testenv.MustDatabase(b)
	org := uuid.New()
	batch := make([]events.Envelope, 200)
	lsn := func() (l int64) {
		require.NoError(b, d.Pool.QueryRow(ctx, `SELECT pg_current_wal_lsn() - '0/0'`).Scan(&l))
		return l
	}
	p := &counting{}
	var wal int64
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		for i := range batch {
			batch[i] = events.Envelope{ID: uuid.New(), Type: "user.updated", StreamType: events.StreamUser, StreamID: uuid.New(),
				StreamVersion: 1, OrganizationID: &org, Position: int64(i + 1)}
		}
		before := lsn()
		b.StartTimer()
		if _, err := ApplyBatch(ctx, d.Pool, p, batch); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		wal += lsn() - before
		b.StartTimer()
	}
	b.ReportMetric(float64(wal)/float64(b.N), "WAL-bytes/batch")
}

// BenchmarkGroupBatch is what serving's group costs for a small batch, the batch a
// steady command load brings: n chatbots created, each a new stream applied by the
// chatbots, audit and webhooks members in one transaction (their preludes, writes,
// versions and positions, and the commit). With deferred, the commit does not wait for
// the disk (Config.DeferFlush, as serving runs the group): the flush that the settler
// then waits for, beside the next batch, is timed apart (flush-µs/batch).
//
//	go test -run '^$' -bench GroupBatch -benchtime 300x ./projections
func BenchmarkGroupBatch(b *testing.B) {
	for _, deferred := range []bool{false, true} {
		for _, n := range []int{1, 10} {
			b.Run(fmt.Sprintf("deferred=%v/chatbots=%d", deferred, n), func(b *testing.B) {
				ctx := context.Background()
				d := testenv.MustDatabase(b)
				store := eventstore.NewStore(d.Pool)
				org := uuid.New()
				r, err := NewRunner(d.Pool, nil, NewProjectorGroup(Deps{Pool: d.Pool, Store: store}),
					Config{Exchange: "bench", DeferFlush: deferred})
				require.NoError(b, err)
				batch := make([]events.Envelope, n)
				var flush time.Duration
				b.ResetTimer()
				for range b.N {
					b.StopTimer()
					for i := range batch {
						batch[i] = mustChatbotCreated(b, store, org)
					}
					b.StartTimer()
					if err := r.applyBatch(ctx, r.shares(batch), batch); err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					start := time.Now()
					require.NoError(b, r.durable(ctx))
					flush += time.Since(start)
					b.StartTimer()
				}
				b.ReportMetric(float64(flush.Microseconds())/float64(b.N), "flush-µs/batch")
			})
		}
	}
}

// mustChatbotCreated appends a chatbot's creation to store and returns its envelope.
func mustChatbotCreated(tb testing.TB, store *eventstore.Store, org uuid.UUID) events.Envelope {
	tb.Helper()
	ctx, id := context.Background(), uuid.New()
	_, err := store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamChatbot, StreamID: id, OrganizationID: &org,
		Events: []events.Event{events.ChatbotCreated{Name: "Bench bot", Responder: events.Responder{Type: "knowledge_base"}}},
		Meta:   events.Meta{Actor: events.Actor{Type: events.ActorSystem}}})
	require.NoError(tb, err)
	envs, err := store.ReadStream(ctx, id, 1, 1)
	require.NoError(tb, err)
	return envs[0]
}

// A group batch pays the round trips of one transaction, not of each member: every
// member's prelude goes in one, and their writes, versions and positions in one pipeline.
// A chatbot's creation concerns three members (chatbots, audit, webhooks); applied member
// by member it was nine round trips.
func TestGroupBatchRoundTrips(t *testing.T) {
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	store := eventstore.NewStore(d.Pool)
	created := mustChatbotCreated(t, store, uuid.New())
	batch, id := []events.Envelope{created}, created.StreamID

	pool, traced := testenv.MustTracedPool(t, d.URL)
	r, err := NewRunner(pool, nil, NewProjectorGroup(Deps{Pool: pool, Store: store}), Config{Exchange: "test"})
	require.NoError(t, err)
	shares := r.shares(batch)
	var members []string
	for _, sh := range shares {
		if len(sh.idx) > 0 {
			members = append(members, sh.p.Name())
		}
	}
	require.Equal(t, []string{ChatbotsName, AuditName, WebhooksName}, members)

	require.NoError(t, r.applyBatch(ctx, shares, batch))
	var got struct{ name string }
	require.NoError(t, d.Pool.QueryRow(ctx, `SELECT name FROM chatbots WHERE id = $1`, id).Scan(&got.name))
	assert.Equal(t, "Bench bot", got.name)

	alone, batches := traced.RoundTrips()
	var preludes [][]string
	for _, b := range batches {
		if slices.ContainsFunc(b, func(q string) bool { return strings.Contains(q, "pg_advisory_xact_lock_shared") }) {
			preludes = append(preludes, b)
		}
	}
	require.Len(t, preludes, 1, "one round trip for every member's prelude")
	require.Len(t, preludes[0], 1+2*len(members)+3,
		"begin, then each member's lock, and its streams' rows with their versions; the webhooks' subscriptions on a generic plan")
	assert.Equal(t, "begin", strings.ToLower(preludes[0][0]), "the transaction begins in the prelude's round trip")
	assert.Contains(t, preludes[0][len(preludes[0])-2], "FROM webhooks", "the subscriptions are read in the prelude (Prefetch)")
	last := batches[len(batches)-1]
	assert.Equal(t, "COMMIT", last[len(last)-1], "the commit goes with the last writes")
	// The preludes with the begin and the subscriptions' query, the writes with the commit.
	assert.LessOrEqual(t, len(alone)+len(batches), 2,
		"round trips: %d alone %q, %d batches %q", len(alone), alone, len(batches), batches)
	assert.Empty(t, alone, "no statement in a round trip of its own")
	assert.Eventually(t, func() bool { return pool.Stat().AcquiredConns() == 0 }, 5*time.Second, 10*time.Millisecond,
		"the connection is given back")
}

// pipedWriter is a Pipelined projector that writes each event's stream version into
// piped_versions, where a version may be written once: a batch of two streams' first
// events fails in the database, in the round trip that carries the commit.
type pipedWriter struct{}

func (pipedWriter) Name() string       { return "piped-writer" }
func (pipedWriter) Bindings() []string { return []string{"#"} }
func (pipedWriter) Pipelined()         {}
func (pipedWriter) Apply(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
	_, err := tx.Exec(ctx, `INSERT INTO piped_versions (version) VALUES ($1)`, e.StreamVersion)
	return err
}

// A batch whose write fails in the round trip that carries its commit leaves nothing
// behind, and its connection goes back to the pool outside any transaction: the next
// batch, on the pool's only connection, applies and commits.
func TestABatchThatFailsWithItsCommitLeavesNothing(t *testing.T) {
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	_, err := d.Pool.Exec(ctx, `CREATE TABLE piped_versions (version int PRIMARY KEY)`)
	require.NoError(t, err)
	store := eventstore.NewStore(d.Pool)
	a, b := mustChatbotCreated(t, store, uuid.New()), mustChatbotCreated(t, store, uuid.New())

	pool, err := db.Open(ctx, d.URL, 1)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	r, err := NewRunner(pool, nil, pipedWriter{}, Config{Exchange: "test"})
	require.NoError(t, err)

	both := []events.Envelope{a, b}
	assert.ErrorContains(t, r.applyBatch(ctx, r.shares(both), both), "23505")
	var rows, streams, positions int
	require.NoError(t, d.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM piped_versions),
		(SELECT count(*) FROM projection_streams WHERE projection = 'piped-writer'),
		(SELECT count(*) FROM projection_positions WHERE projection = 'piped-writer')`).Scan(&rows, &streams, &positions))
	assert.Equal(t, [3]int{0, 0, 0}, [3]int{rows, streams, positions}, "nothing of the failed batch")

	one := []events.Envelope{b}
	require.NoError(t, r.applyBatch(ctx, r.shares(one), one))
	require.NoError(t, d.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM piped_versions),
		(SELECT count(*) FROM projection_streams WHERE projection = 'piped-writer'),
		(SELECT count(*) FROM projection_positions WHERE projection = 'piped-writer')`).Scan(&rows, &streams, &positions))
	assert.Equal(t, [3]int{1, 1, 1}, [3]int{rows, streams, positions}, "the next batch committed")
}

// A read through the pipeline goes after the writes queued before it, in their round
// trip, and sees them; a queued write's error comes back from the read.
func TestPipelineReadsAfterItsWrites(t *testing.T) {
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	pool, traced := testenv.MustTracedPool(t, d.URL)
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx)
	_, err = tx.Exec(ctx, `CREATE TEMP TABLE piped (n int PRIMARY KEY)`)
	require.NoError(t, err)
	pipe := &pipeTx{Tx: tx}
	roundTrips := func() int {
		alone, batches := traced.RoundTrips()
		return len(alone) + len(batches)
	}
	before := roundTrips()

	for i := range 3 {
		_, err := pipe.Exec(ctx, `INSERT INTO piped VALUES ($1)`, i)
		require.NoError(t, err)
	}
	rows, err := pipe.Query(ctx, `SELECT n FROM piped ORDER BY n`)
	require.NoError(t, err)
	got, err := pgx.CollectRows(rows, pgx.RowTo[int])
	require.NoError(t, err)
	assert.Equal(t, []int{0, 1, 2}, got)
	assert.Equal(t, 1, roundTrips()-before, "the writes and the read in one round trip")

	_, err = pipe.Exec(ctx, `INSERT INTO piped VALUES (3)`)
	require.NoError(t, err)
	var n int
	require.NoError(t, pipe.QueryRow(ctx, `SELECT count(*) FROM piped`).Scan(&n))
	assert.Equal(t, 4, n)
	assert.Equal(t, 2, roundTrips()-before)

	_, err = pipe.Exec(ctx, `INSERT INTO piped VALUES (0)`) // taken
	require.NoError(t, err)
	_, err = pipe.Query(ctx, `SELECT n FROM piped`)
	assert.ErrorContains(t, err, "23505", "the queued write's error")
}
