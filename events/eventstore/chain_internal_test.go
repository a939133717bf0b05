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
