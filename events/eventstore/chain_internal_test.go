package eventstore

import (
	"context"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// The chainer links full batches back to back, and after one that is not full it waits
// for Idle: what commits meanwhile is linked together in its next step, so a trickle of
// commands costs a step an Idle, not a step every few events.
func TestChainerPausesAfterABatchThatIsNotFull(t *testing.T) {
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	pool, traced := testenv.MustTracedPool(t, d.URL)
	store := NewStore(d.Pool)
	defer store.Close()
	org := uuid.New()
	appendOne := func() error {
		_, err := store.Append(ctx, AppendRequest{StreamType: events.StreamUser, StreamID: uuid.New(), OrganizationID: &org,
			Meta:   events.Meta{Actor: events.Actor{Type: events.ActorSystem}},
			Events: []events.Event{events.UserCreated{Name: "Ada", Email: "ada@example.com", Roles: []string{"member"}, Status: "active"}}})
		return err
	}
	linked := func() int {
		var n int
		require.NoError(t, d.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_chain`).Scan(&n))
		return n
	}
	run := func(size int, idle time.Duration) (stop func()) {
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		c := &Chainer{Pool: pool, Key: events.ChainKey("0123456789abcdef0123456789abcdef-test-key"), BatchSize: size, Idle: idle}
		go func() { _ = c.Run(ctx); close(done) }()
		return func() { cancel(); <-done }
	}

	// Nine events, three full batches: linked without a pause (an hour's).
	for range 9 {
		require.NoError(t, appendOne())
	}
	stop := run(3, time.Hour)
	require.Eventually(t, func() bool { return linked() == 9 }, 10*time.Second, 10*time.Millisecond,
		"the chainer paused after a full batch")
	stop()

	// Four writers committing for a second and a half, with a pause of 300 ms: a step each
	// pause at most, with the first and the last (after the writers stop) and one to
	// spare, where linking as they commit took a step for every few events.
	traced.Reset()
	stop = run(100000, 300*time.Millisecond)
	start := time.Now()
	var wg sync.WaitGroup
	var appended atomic.Int64
	for range 4 {
		wg.Go(func() {
			for time.Since(start) < 1500*time.Millisecond {
				if !assert.NoError(t, appendOne()) {
					return
				}
				appended.Add(1)
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	require.Eventually(t, func() bool { return linked() == 9+int(appended.Load()) }, 10*time.Second, 10*time.Millisecond)
	stop()
	steps := len(traced.Matching(regexp.MustCompile(`INSERT INTO audit_chain \(`)))
	assert.LessOrEqual(t, steps, int(took/(300*time.Millisecond))+3,
		"%d events linked in %d steps over %s: the chainer did not pause after batches that were not full", appended.Load(), steps, took)
	t.Logf("%d events linked in %d steps over %s", appended.Load(), steps, took)
}

// With a tap (Chainer.Tap), the chainer links what the relay of its process read, without
// reading the log again, and links it exactly as it would have from the log: from the
// start of the relay's batches, and from inside one, where its own read of the log
// ended.
func TestTheChainerLinksWhatTheRelayReadFromItsTap(t *testing.T) {
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	a := testenv.MustAMQP(t)
	c := mustCollector(t, a)
	store := NewStore(d.Pool)
	defer store.Close()
	orgs := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	const n = 40
	for i := range n {
		_, err := store.Append(ctx, AppendRequest{StreamType: events.StreamUser, StreamID: uuid.New(), OrganizationID: &orgs[i%3],
			Meta:   events.Meta{Actor: events.Actor{Type: events.ActorSystem}},
			Events: []events.Event{events.UserCreated{Name: "Ada", Email: "ada@example.com", Roles: []string{"member"}, Status: "active"}}})
		require.NoError(t, err)
	}
	pool, traced := testenv.MustTracedPool(t, d.URL)
	tap := &Tap{}
	chainer := &Chainer{Pool: pool, Key: events.ChainKey("0123456789abcdef0123456789abcdef-test-key"), BatchSize: 10, Tap: tap}
	linked := func() int {
		var links int
		require.NoError(t, d.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_chain`).Scan(&links))
		return links
	}
	// The first ten from the log, before the relay has read anything: the chain's
	// checkpoint is then inside the relay's second batch of seven.
	testenv.Eventually(t, 20*time.Second, func() error {
		if _, err := chainer.Step(ctx); err != nil {
			return err
		}
		if linked() == 0 {
			return errorf("nothing linked yet")
		}
		return nil
	})

	r, err := NewRelay(d.Pool, mustBroker(t, a), RelayConfig{Exchange: a.Exchange, BatchSize: 7, Tap: tap, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(rctx) }()
	defer func() { cancel(); <-done }()
	c.waitFor(t, n)

	traced.Reset()
	for i := 0; linked() < n && i < 100; i++ {
		_, err := chainer.Step(ctx)
		require.NoError(t, err)
	}
	require.Equal(t, n, linked())
	assert.Negative(t, traced.FirstMatching(regexp.MustCompile(`FROM events`)), "the log is not read again: %q", traced.All())

	// The links are those of the log in commit order, organization by organization.
	all, _, err := ReadCommitted(ctx, d.Pool, Checkpoint{}, 1000)
	require.NoError(t, err)
	require.Len(t, all, n)
	type link struct {
		org       uuid.UUID
		seq, pos  int64
		ev, chain []byte
	}
	var want []link
	heads := map[uuid.UUID]link{}
	for _, e := range all {
		o := chainOrg(e)
		h, ok := heads[o]
		if !ok {
			h = link{chain: genesis}
		}
		ev := events.EventHash(e)
		l := link{org: o, seq: h.seq + 1, pos: e.Position, ev: ev, chain: events.LinkHash(h.chain, ev, h.seq+1, e.Position)}
		heads[o] = l
		want = append(want, l)
	}
	rows, err := d.Pool.Query(ctx, `SELECT organization_id, seq, position, event_hash, hash FROM audit_chain ORDER BY position`)
	require.NoError(t, err)
	var got []link
	for rows.Next() {
		var l link
		require.NoError(t, rows.Scan(&l.org, &l.seq, &l.pos, &l.ev, &l.chain))
		got = append(got, l)
	}
	require.NoError(t, rows.Err())
	assert.Equal(t, want, got)
}
