package ratelimit

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// holdFirst counts the limiter's takes (its script's EVALSHA: a server that has not seen
// the script yet is sent an EVAL after it, not counted) and holds the first one until
// release is closed.
type holdFirst struct {
	sent    atomic.Int64
	release chan struct{}
}

func (h *holdFirst) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *holdFirst) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "evalsha" && h.sent.Add(1) == 1 {
			<-h.release
		}
		return next(ctx, cmd)
	}
}
func (h *holdFirst) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// waiting is how many of key's requests wait for a take from Redis.
func (l *Limiter) waiting(key string) int {
	v, ok := l.leases.Load(key)
	if !ok {
		return 0
	}
	le := v.(*lease)
	le.mu.Lock()
	defer le.mu.Unlock()
	return le.waiting
}

// The requests that arrive while a key's take from Redis is in flight wait for it, and
// the next take asks for all of them at once: 300 requests arriving together cost two
// Redis commands (the first request's single event, then 299), where growing the lease
// by the key's pace alone would take a dozen round trips, each request waiting behind
// the ones before.
func TestWaitingRequestsShareOneTakeSizedForThemAll(t *testing.T) {
	r := testenv.MustRedis(t)
	h := &holdFirst{release: make(chan struct{})}
	r.Client.AddHook(h)
	l := New(r.Client, r.Prefix, slog.New(slog.DiscardHandler))
	lim := Limit{Rate: 100000, Burst: 100000, Period: 1000 * time.Hour} // no refill during the test
	const n = 300
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if l.Take(context.Background(), "crowd", lim).Allowed {
				allowed.Add(1)
			}
		}()
	}
	require.Eventually(t, func() bool { return l.waiting("crowd") == n-1 }, 10*time.Second, time.Millisecond,
		"every other request waits for the first one's take")
	close(h.release)
	wg.Wait()
	assert.Equal(t, int64(n), allowed.Load())
	assert.Equal(t, int64(2), h.sent.Load(), "one take for the first request, one for all that waited")
	assert.Zero(t, l.leased("crowd"))
	assert.Equal(t, 100000-n, l.Peek(context.Background(), "crowd", lim).Remaining, "exactly the events used were taken")
}

// A request whose context ends while its key waits for Redis is answered at once, and a
// take cut short by its own request's end leaves Redis in use: a client that goes away is
// no sign that Redis is down.
func TestARequestThatLeavesNeitherWaitsNorTurnsRedisOff(t *testing.T) {
	r := testenv.MustRedis(t)
	h := &holdFirst{release: make(chan struct{})}
	r.Client.AddHook(h)
	l := New(r.Client, r.Prefix, slog.New(slog.DiscardHandler))
	lim := Limit{Rate: 1000, Burst: 1000, Period: time.Hour}

	first := make(chan Decision)
	go func() { first <- l.Take(context.Background(), "k", lim) }()
	require.Eventually(t, func() bool { return h.sent.Load() == 1 }, 10*time.Second, time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	gone := make(chan Decision)
	go func() { gone <- l.Take(ctx, "k", lim) }()
	require.Eventually(t, func() bool { return l.waiting("k") == 1 }, 10*time.Second, time.Millisecond)
	cancel()
	select {
	case d := <-gone:
		assert.False(t, d.Allowed, "a request that left is not allowed")
		assert.Zero(t, d.RetryAfter)
	case <-time.After(5 * time.Second):
		t.Fatal("a request whose context ended still waits for the take in flight")
	}
	close(h.release)
	assert.True(t, (<-first).Allowed)

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	assert.False(t, l.Take(cancelled, "fresh", lim).Allowed)
	assert.True(t, l.redisUp(), "a cancelled request does not mark Redis down")
	before := h.sent.Load()
	assert.True(t, l.Take(context.Background(), "fresh", lim).Allowed)
	assert.Equal(t, before+1, h.sent.Load(), "the next request still asks Redis")
}

// Past maxKeys, a new key sweeps out the leases not used for a minute; the new key's own
// lease (not used yet) and the recent ones stay.
func TestLeasesNotUsedForAMinuteAreSweptPastMaxKeys(t *testing.T) {
	l := New(nil, "x:", slog.New(slog.DiscardHandler))
	now := time.Now()
	for i := range maxKeys - 1 {
		l.lease(fmt.Sprint("old-", i), now.Add(-2*time.Minute))
	}
	l.lease("recent", now.Add(-time.Second))
	require.Equal(t, int64(maxKeys), l.nLeases.Load(), "no sweep up to maxKeys")
	l.lease("fresh", now) // one past maxKeys: sweeps
	var left []string
	l.leases.Range(func(k, _ any) bool { left = append(left, k.(string)); return true })
	assert.ElementsMatch(t, []string{"recent", "fresh"}, left)
	assert.Equal(t, int64(2), l.nLeases.Load())
}
