package readmodel_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/readmodel"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// listening starts a's listener until the test ends and waits until it hears.
func listening(t *testing.T, a *readmodel.Applied) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Listen(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	testenv.Eventually(t, 5*time.Second, func() error {
		if !a.Live() {
			return errors.New("not listening yet")
		}
		return nil
	})
}

// hearing is a database and an Applied listening to it whose waits look again only when
// told (their safety poll is an hour).
func hearing(t *testing.T) (testenv.Database, *readmodel.Applied) {
	t.Helper()
	d := testenv.MustDatabase(t)
	a := readmodel.NewApplied(d.Pool.Config().ConnConfig, testenv.Logger(t))
	a.SafetyPoll = time.Hour
	listening(t, a)
	return d, a
}

type waited struct {
	reached bool
	err     error
}

// waitInBackground waits for projection's stream to reach version, for at most 10 s.
func waitInBackground(a *readmodel.Applied, d testenv.Database, projection string, stream uuid.UUID, version int) <-chan waited {
	out := make(chan waited, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		reached, err := a.WaitApplied(ctx, d.Pool, projection, stream, version)
		out <- waited{reached, err}
	}()
	return out
}

func stillWaiting(t *testing.T, w <-chan waited, why string) {
	t.Helper()
	select {
	case r := <-w:
		t.Fatalf("%s, yet the wait ended: %+v", why, r)
	case <-time.After(300 * time.Millisecond):
	}
}

func reached(t *testing.T, w <-chan waited) {
	t.Helper()
	r := <-w
	require.NoError(t, r.err)
	assert.True(t, r.reached, "the wait ended without the version (after its 10 s)")
}

// While its listener hears, a consistency wait looks again when its projection's
// notification comes, not on a timer: a version committed without one stays unseen
// (the safety poll is an hour here), another projection's notification does not wake
// it, and its own does.
func TestConsistencyWaitWakesOnItsProjectionsNotification(t *testing.T) {
	ctx := context.Background()
	d, a := hearing(t)
	stream := uuid.New()
	w := waitInBackground(a, d, "chatbots", stream, 2)

	_, err := d.Pool.Exec(ctx, `INSERT INTO projection_streams (projection, stream_id, version) VALUES ('chatbots', $1, 1)`, stream)
	require.NoError(t, err)
	_, err = d.Pool.Exec(ctx, `SELECT pg_notify($1, 'chatbots')`, readmodel.AppliedChannel)
	require.NoError(t, err)
	stillWaiting(t, w, "version 1 of 2 was notified")

	_, err = d.Pool.Exec(ctx, `UPDATE projection_streams SET version = 2 WHERE projection = 'chatbots' AND stream_id = $1`, stream)
	require.NoError(t, err)
	stillWaiting(t, w, "nothing was notified")
	_, err = d.Pool.Exec(ctx, `SELECT pg_notify($1, 'accounts,audit')`, readmodel.AppliedChannel)
	require.NoError(t, err)
	stillWaiting(t, w, "only other projections were notified")

	_, err = d.Pool.Exec(ctx, `SELECT pg_notify($1, 'audit,chatbots')`, readmodel.AppliedChannel)
	require.NoError(t, err)
	reached(t, w)
}

// When the listener's connection dies, waits poll again (they never hang on
// notifications nobody hears), and a nil Applied always polls.
func TestConsistencyWaitPollsWithoutItsListener(t *testing.T) {
	ctx := context.Background()
	d, a := hearing(t)
	stream := uuid.New()
	w := waitInBackground(a, d, "chatbots", stream, 1)
	stillWaiting(t, w, "nothing was written")

	_, err := d.Pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND query LIKE 'LISTEN%'`)
	require.NoError(t, err)
	_, err = d.Pool.Exec(ctx, `INSERT INTO projection_streams (projection, stream_id, version) VALUES ('chatbots', $1, 1)`, stream)
	require.NoError(t, err)
	reached(t, w)

	var none *readmodel.Applied
	other := uuid.New()
	w = waitInBackground(none, d, "chatbots", other, 1)
	stillWaiting(t, w, "nothing was written")
	_, err = d.Pool.Exec(ctx, `INSERT INTO projection_streams (projection, stream_id, version) VALUES ('chatbots', $1, 1)`, other)
	require.NoError(t, err)
	reached(t, w)
}

// countingQuerier counts the queries sent through it, and the rows of QueryRow (a
// waiter's own look) read; with failQuery its Query (the check's) fails.
type countingQuerier struct {
	*pgxpool.Pool
	n, looked atomic.Int64
	failQuery bool
}

type lookedRow struct {
	pgx.Row
	looked *atomic.Int64
}

func (r lookedRow) Scan(dest ...any) error {
	defer r.looked.Add(1)
	return r.Row.Scan(dest...)
}

func (c *countingQuerier) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	c.n.Add(1)
	return lookedRow{Row: c.Pool.QueryRow(ctx, sql, args...), looked: &c.looked}
}

func (c *countingQuerier) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	c.n.Add(1)
	if c.failQuery {
		return nil, errors.New("the check's query failed")
	}
	return c.Pool.Query(ctx, sql, args...)
}

// SendBatch counts a batch (the check's query with its generic plan) as one query, and
// fails it as Query does.
func (c *countingQuerier) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	c.n.Add(1)
	if c.failQuery {
		b = &pgx.Batch{}
		b.Queue(`SELECT 1 / 0`) // the check's query failed
	}
	return c.Pool.SendBatch(ctx, b)
}

// waitsOnStreams starts a wait for version 1 of each of n new streams of chatbots, read
// through q, and returns the streams and the waits once each has made its first look.
func waitsOnStreams(t *testing.T, a *readmodel.Applied, q *countingQuerier, n int) ([]uuid.UUID, []<-chan waited) {
	t.Helper()
	streams := make([]uuid.UUID, n)
	waits := make([]<-chan waited, n)
	for i := range streams {
		streams[i] = uuid.New()
		out := make(chan waited, 1)
		waits[i] = out
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			reached, err := a.WaitApplied(ctx, q, "chatbots", streams[i], 1)
			out <- waited{reached, err}
		}()
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if got := q.looked.Load(); got < int64(n) {
			return fmt.Errorf("%d of %d first looks", got, n)
		}
		return nil
	})
	return streams, waits
}

// appliedAndNotified writes version 1 of each of streams for chatbots, then notifies
// chatbots once, as a runner does after its commit.
func appliedAndNotified(t *testing.T, d testenv.Database, streams []uuid.UUID) {
	t.Helper()
	ctx := context.Background()
	_, err := d.Pool.Exec(ctx, `INSERT INTO projection_streams (projection, stream_id, version)
		SELECT 'chatbots', s, 1 FROM unnest($1::uuid[]) AS s`, streams)
	require.NoError(t, err)
	_, err = d.Pool.Exec(ctx, `SELECT pg_notify($1, 'chatbots')`, readmodel.AppliedChannel)
	require.NoError(t, err)
}

// A notification has every waiting stream of its projection read in one query, however
// many wait: a query per waiter per committed batch was most of a waiting read's cost.
func TestOneNotificationIsOneLookForEveryWaiter(t *testing.T) {
	d, a := hearing(t)
	q := &countingQuerier{Pool: d.Pool}
	streams, waits := waitsOnStreams(t, a, q, 20)
	appliedAndNotified(t, d, streams)
	for _, w := range waits {
		reached(t, w)
	}
	assert.EqualValues(t, 21, q.n.Load(), "20 first looks, then one check for the 20")
}

// A check that fails has its waiters look on their own: none is left waiting for a
// notification that was heard.
func TestAFailedCheckHasItsWaitersLook(t *testing.T) {
	d, a := hearing(t)
	q := &countingQuerier{Pool: d.Pool, failQuery: true}
	streams, waits := waitsOnStreams(t, a, q, 3)
	appliedAndNotified(t, d, streams)
	for _, w := range waits {
		reached(t, w)
	}
}

// A watch is registered before the caller's own look (readmodel.Watch, WaitAfter): a
// batch committed and notified after that look, and before the wait begins, ends the wait
// at once, though the wait looks again only when told (the safety poll is an hour here).
// A watch whose look found its version waits for nothing.
func TestConsistencyWatchHearsWhatCommitsAfterTheCallersLook(t *testing.T) {
	ctx := context.Background()
	d, a := hearing(t)
	stream := uuid.New()
	watch := a.Watch(d.Pool, "chatbots", stream, 1)
	looked, err := readmodel.AppliedVersion(ctx, d.Pool, "chatbots", stream)
	require.NoError(t, err)
	require.Zero(t, looked)

	_, err = d.Pool.Exec(ctx, `INSERT INTO projection_streams (projection, stream_id, version) VALUES ('chatbots', $1, 1)`, stream)
	require.NoError(t, err)
	_, err = d.Pool.Exec(ctx, `SELECT pg_notify($1, 'chatbots')`, readmodel.AppliedChannel)
	require.NoError(t, err)
	time.Sleep(200 * time.Millisecond) // the notification is heard before the wait begins

	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ok, err := watch.WaitAfter(wctx, looked)
	require.NoError(t, err)
	assert.True(t, ok, "the wait missed the notification and ran to its deadline")

	done := a.Watch(d.Pool, "chatbots", stream, 1)
	ok, err = done.WaitAfter(wctx, 1)
	require.NoError(t, err)
	assert.True(t, ok)
}

// A batch committed in this process ends the waits it reached at once (Committed), with
// no notification and no query (the safety poll is an hour here and nothing is written):
// only the waits of its projection, read with the querier it names, for a version the
// batch reached.
func TestConsistencyWaitEndsOnACommitInItsProcess(t *testing.T) {
	d, a := hearing(t)
	stream := uuid.New()
	w := waitInBackground(a, d, "chatbots", stream, 2)
	stillWaiting(t, w, "nothing was committed")

	a.Committed(d.Pool, "chatbots", map[uuid.UUID]int{stream: 1, uuid.New(): 5})
	stillWaiting(t, w, "version 1 of 2 was committed")
	a.Committed(d.Pool, "audit", map[uuid.UUID]int{stream: 2})
	stillWaiting(t, w, "another projection committed it")
	elsewhere, _ := testenv.MustTracedPool(t, d.URL)
	a.Committed(elsewhere, "chatbots", map[uuid.UUID]int{stream: 2})
	stillWaiting(t, w, "committed where the wait does not read")

	a.Committed(d.Pool, "chatbots", map[uuid.UUID]int{stream: 2})
	reached(t, w)
}
