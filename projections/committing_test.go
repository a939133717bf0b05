package projections_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/broker"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
	"github.com/chatbotsaas/chatbotd/projections"
)

// pipedMember is member as a Pipelined projector: its writes go with the batch's commit,
// and an event that is poison to it fails there, in PostgreSQL, not in Apply.
type pipedMember struct{ member }

func (pipedMember) Pipelined() {}
func (m pipedMember) Apply(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
	m.mu.Lock()
	poisoned := *m.poisoned && e.ID == *m.poison
	m.mu.Unlock()
	if poisoned {
		_, err := tx.Exec(ctx, `SELECT 1 / 0`)
		return err
	}
	_, err := tx.Exec(ctx, `INSERT INTO grp_applied (member, event_id) VALUES ($1, $2)`, m.name, e.ID)
	return err
}

// batchTimeline records, in order, when each batch a pool sends starts and ends, and its
// statements (pgx traces a batch's statements as their results are read).
type batchTimeline struct {
	mu      sync.Mutex
	steps   int
	batches []*tracedBatch
	open    map[*pgx.Conn]*tracedBatch
}

type tracedBatch struct {
	conn       *pgx.Conn
	start, end int
	sql        []string
}

func (b *batchTimeline) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}

func (b *batchTimeline) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (b *batchTimeline) TraceBatchStart(ctx context.Context, conn *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.steps++
	tb := &tracedBatch{conn: conn, start: b.steps, end: -1}
	b.batches = append(b.batches, tb)
	b.open[conn] = tb
	return ctx
}

func (b *batchTimeline) TraceBatchQuery(_ context.Context, conn *pgx.Conn, data pgx.TraceBatchQueryData) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if tb := b.open[conn]; tb != nil {
		tb.sql = append(tb.sql, data.SQL)
	}
}

func (b *batchTimeline) TraceBatchEnd(_ context.Context, conn *pgx.Conn, _ pgx.TraceBatchEndData) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.steps++
	if tb := b.open[conn]; tb != nil {
		tb.end = b.steps
		delete(b.open, conn)
	}
}

// overlaps counts the batches' preludes that were sent while another connection's
// commit was on its way, and the commits.
func (b *batchTimeline) overlaps() (overlapped, commits int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	has := func(tb *tracedBatch, part string) bool {
		return slices.ContainsFunc(tb.sql, func(q string) bool { return strings.Contains(q, part) })
	}
	for _, c := range b.batches {
		if !has(c, "COMMIT") {
			continue
		}
		commits++
		for _, p := range b.batches {
			if p.conn != c.conn && has(p, "pg_advisory_xact_lock_shared") && p.start > c.start && p.start < c.end {
				overlapped++
				break
			}
		}
	}
	return overlapped, commits
}

// timedPool is a pool on env's database whose batches are recorded, of up to conns
// connections (0: pgxpool's default).
func (env *groupEnv) timedPool(conns int32) (*pgxpool.Pool, *batchTimeline) {
	cfg, err := pgxpool.ParseConfig(env.d.URL)
	require.NoError(env.t, err)
	if conns > 0 {
		cfg.MaxConns = conns
	}
	timeline := &batchTimeline{open: map[*pgx.Conn]*tracedBatch{}}
	cfg.ConnConfig.Tracer = timeline
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(env.t, err)
	env.t.Cleanup(pool.Close)
	return pool, timeline
}

// backlog publishes, into r's queue before it starts, n events of streams of
// their own and n versions of one stream, interleaved so that every few batches share
// that stream; it returns the long stream's events.
func (env *groupEnv) backlog(r *projections.Runner, n int) (all, long []events.Envelope) {
	env.a.Queue(r.Name()) // deleted at the end, with its dead letters
	require.NoError(env.t, broker.DeclareEventExchange(env.ch, env.a.Exchange))
	require.NoError(env.t, broker.DeclareQueue(env.ch, r.Queue()))
	stream := uuid.New()
	for v := 1; v <= n; v++ {
		single := event("grp.happened")
		e := event("grp.happened")
		e.StreamID, e.StreamVersion = stream, v
		all, long = append(all, single, e), append(long, e)
	}
	for _, e := range all {
		testenv.PublishEvents(env.t, env.ch, env.a.Exchange, e)
	}
	return all, long
}

// pipedRunner is a runner of m on pool in batches of five events, with a backlog of 2n
// events in its queue (backlog).
func (env *groupEnv) pipedRunner(pool *pgxpool.Pool, m projections.Projector, n int) (r *projections.Runner, all, long []events.Envelope) {
	r, err := projections.NewRunner(pool, env.conn, m, projections.Config{Exchange: env.a.Exchange,
		QueuePrefix: env.a.QueuePrefix, BatchSize: 5, DeliveryLimit: 3, Attempts: 2, Logger: testenv.Logger(env.t)})
	require.NoError(env.t, err)
	all, long = env.backlog(r, n)
	return r, all, long
}

// run runs r until the end of the test.
func (env *groupEnv) run(r *projections.Runner) {
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = r.Run(ctx); close(done) }()
	env.t.Cleanup(func() { stop(); <-done })
}

// waitSeen waits until m has applied at least applied events and had at least dead ones
// dead-lettered, and returns them.
func (env *groupEnv) waitSeen(m pipedMember, applied, dead int) (a, d []uuid.UUID) {
	testenv.Eventually(env.t, 30*time.Second, func() error {
		if a, d = m.seen(); len(a) < applied || len(d) < dead {
			return fmt.Errorf("%d applied, %d dead-lettered", len(a), len(d))
		}
		return nil
	})
	return a, d
}

// inOrder are the events of long among applied, in the order they were applied.
func inOrder(applied []uuid.UUID, long []events.Envelope) []uuid.UUID {
	var out []uuid.UUID
	for _, id := range applied {
		if slices.Contains(eventIDs(long), id) {
			out = append(out, id)
		}
	}
	return out
}

// With a backlog, the runner prepares the next batch (its prelude: its lock, its streams'
// rows and versions) while the one before it commits, on another connection; where the
// two share a stream, the next one waits for the commit. Every event is applied once, and
// one stream's versions in order.
func TestTheNextBatchIsPreparedWhileOneCommits(t *testing.T) {
	env := newGroupEnv(t)
	pool, timeline := env.timedPool(0)
	m := pipedMember{env.member("piped", "grp.*")}
	r, all, long := env.pipedRunner(pool, m, 40)
	env.run(r)

	applied, dead := env.waitSeen(m, len(all), 0)
	assert.ElementsMatch(t, eventIDs(all), applied, "every event once")
	assert.Empty(t, dead)
	assert.Equal(t, eventIDs(long), inOrder(applied, long), "one stream's versions in order")
	var version int
	require.NoError(t, env.d.Pool.QueryRow(context.Background(), `SELECT version FROM projection_streams
		WHERE projection = 'piped' AND stream_id = $1`, long[0].StreamID).Scan(&version))
	assert.Equal(t, len(long), version)

	overlapped, commits := timeline.overlaps()
	assert.GreaterOrEqual(t, commits, len(all)/5, "batches of at most five")
	assert.Greater(t, overlapped, commits/4, "of %d commits, %d had the next batch's prelude sent meanwhile", commits, overlapped)
}

// A batch whose commit fails while the next one is prepared: the next one lets go of its
// rows and waits; the failed one is applied again one event at a time, its poison event
// dead-lettered, the rest applied; then the next one is applied from the start. Nothing is
// lost or applied twice, and the stream they share keeps its order.
func TestABatchThatFailsWhileTheNextIsPreparedIsAppliedAgainFirst(t *testing.T) {
	env := newGroupEnv(t)
	pool, timeline := env.timedPool(0)
	m := pipedMember{env.member("piped", "grp.*")}
	r, all, long := env.pipedRunner(pool, m, 20)
	// A single of the fourth batch is poison: it fails in the commit's round trip.
	poison := all[16]
	require.NotEqual(t, long[0].StreamID, poison.StreamID)
	*m.poison, *m.poisoned = poison.ID, true
	env.run(r)

	applied, dead := env.waitSeen(m, len(all)-1, 1)
	assert.Equal(t, []uuid.UUID{poison.ID}, dead)
	assert.ElementsMatch(t, slices.DeleteFunc(eventIDs(all), func(id uuid.UUID) bool { return id == poison.ID }), applied,
		"every other event once")
	assert.Equal(t, eventIDs(long), inOrder(applied, long), "one stream's versions in order")
	overlapped, _ := timeline.overlaps()
	assert.Positive(t, overlapped, "a batch was prepared while another committed")
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := pool.Stat().AcquiredConns(); n != 0 {
			return errors.New("connections still held")
		}
		return nil
	})
}

// A runner whose pool has no connection to spare applies the next batch after the one
// that commits, instead of waiting for a second connection while it holds the first.
func TestARunnerWithNoSpareConnectionAppliesOneBatchAfterAnother(t *testing.T) {
	env := newGroupEnv(t)
	pool, timeline := env.timedPool(1)
	m := pipedMember{env.member("piped", "grp.*")}
	r, all, _ := env.pipedRunner(pool, m, 20)
	env.run(r)

	applied, _ := env.waitSeen(m, len(all), 0)
	assert.ElementsMatch(t, eventIDs(all), applied, "every event once")
	overlapped, commits := timeline.overlaps()
	assert.Zero(t, overlapped)
	assert.GreaterOrEqual(t, commits, len(all)/5)
}

func eventIDs(envs []events.Envelope) []uuid.UUID {
	out := make([]uuid.UUID, len(envs))
	for i, e := range envs {
		out[i] = e.ID
	}
	return out
}

// toldMember is a pipedMember whose after-commit work records what it is told: the
// delivered and applied events of each AfterApplied, and how many events AfterCommit got
// without being told what was applied.
type toldMember struct {
	pipedMember
	calls  *[]appliedCall
	untold *int
}

func (m toldMember) AfterCommit(_ context.Context, batch []events.Envelope) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	*m.untold += len(batch)
	return nil
}

func (m toldMember) AfterApplied(_ context.Context, batch, applied []events.Envelope) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	*m.calls = append(*m.calls, appliedCall{eventIDs(batch), eventIDs(applied)})
	return nil
}

// A runner with no spare connection applies every other batch on its own (after the one
// committing lands), and tells that batch's after-commit work what it applied too, as it
// does for a batch prepared while another commits.
func TestEveryBatchCommittedWholeIsToldWhatItApplied(t *testing.T) {
	env := newGroupEnv(t)
	pool, timeline := env.timedPool(1)
	m := toldMember{pipedMember: pipedMember{env.member("told", "grp.*")}, calls: &[]appliedCall{}, untold: new(int)}
	r, all, _ := env.pipedRunner(pool, m, 20)
	env.run(r)

	testenv.Eventually(t, 30*time.Second, func() error {
		m.mu.Lock()
		defer m.mu.Unlock()
		var done int
		for _, c := range *m.calls {
			done += len(c.delivered)
		}
		if done+*m.untold < len(all) {
			return fmt.Errorf("after-commit work for %d of %d events", done, len(all))
		}
		return nil
	})
	m.mu.Lock()
	defer m.mu.Unlock()
	assert.Zero(t, *m.untold, "every batch was told what it applied")
	var applied []uuid.UUID
	for _, c := range *m.calls {
		assert.Equal(t, c.delivered, c.applied, "a fresh event is applied by the batch that delivers it")
		applied = append(applied, c.applied...)
	}
	assert.ElementsMatch(t, eventIDs(all), applied)
	_, commits := timeline.overlaps()
	assert.GreaterOrEqual(t, commits, len(all)/5, "batches of five at most")
}
