package ratelimit_test

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

	"github.com/chatbotsaas/chatbotd/internal/ratelimit"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

func exercise(t *testing.T, l *ratelimit.Limiter) {
	ctx := context.Background()
	lim := ratelimit.PerMinute(5)
	for i := 0; i < 5; i++ {
		assert.True(t, l.Peek(ctx, "k", lim).Allowed, "peek %d", i)
		d := l.Take(ctx, "k", lim)
		assert.True(t, d.Allowed, "take %d", i)
		assert.Equal(t, 4-i, d.Remaining)
		assert.Equal(t, 5, d.Limit)
	}
	peek := l.Peek(ctx, "k", lim)
	assert.False(t, peek.Allowed)
	assert.InDelta(t, 12*time.Second, peek.RetryAfter, float64(2*time.Second), "one slot frees after period/rate")
	d := l.Take(ctx, "k", lim)
	assert.False(t, d.Allowed)
	assert.Greater(t, d.RetryAfter, time.Duration(0))
	assert.True(t, l.Take(ctx, "other", lim).Allowed, "keys are independent")
}

func TestLimiterInRedis(t *testing.T) {
	r := testenv.MustRedis(t)
	exercise(t, ratelimit.New(r.Client, r.Prefix, slog.New(slog.DiscardHandler)))
}

func TestLimiterFallsBackWhenRedisIsDown(t *testing.T) {
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: 50 * time.Millisecond, MaxRetries: -1})
	defer dead.Close()
	exercise(t, ratelimit.New(dead, "x:", slog.New(slog.DiscardHandler)))
}

func TestLoginThrottleCountsFailuresPerIPAndEmail(t *testing.T) {
	r := testenv.MustRedis(t)
	th := ratelimit.NewLoginThrottle(ratelimit.New(r.Client, r.Prefix, slog.New(slog.DiscardHandler)), 5, 8)
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		_, blocked := th.Blocked(ctx, "1.1.1.1", "a@example.com", "")
		assert.False(t, blocked)
		th.Failed(ctx, "1.1.1.1", "a@example.com", "")
	}
	retry, blocked := th.Blocked(ctx, "1.1.1.1", "a@example.com", "")
	assert.True(t, blocked)
	assert.Greater(t, retry, time.Duration(0))
	_, blocked = th.Blocked(ctx, "1.1.1.1", "b@example.com", "")
	assert.False(t, blocked, "another email is not slowed")
	// Across IPs, the per-email limit (8) holds.
	for i := 0; i < 3; i++ {
		th.Failed(ctx, "2.2.2.2", "a@example.com", "")
	}
	_, blocked = th.Blocked(ctx, "3.3.3.3", "a@example.com", "")
	assert.True(t, blocked)
	// ...but not for a client with a device token: only its own failures count.
	_, blocked = th.Blocked(ctx, "3.3.3.3", "a@example.com", "device-1")
	assert.False(t, blocked, "a known device is not held back by others' failures")
	for i := 0; i < 5; i++ {
		th.Failed(ctx, fmt.Sprint("4.4.4.", i), "a@example.com", "device-1")
	}
	_, blocked = th.Blocked(ctx, "5.5.5.5", "a@example.com", "device-1")
	assert.True(t, blocked, "a device token's own failures count, from any IP")
	_, blocked = th.Blocked(ctx, "5.5.5.5", "a@example.com", "device-2")
	assert.False(t, blocked, "and only against that token")
}

// A refused login is recorded once a minute per email, however often it is tried.
func TestLoginThrottleRecordsRefusalsBounded(t *testing.T) {
	r := testenv.MustRedis(t)
	th := ratelimit.NewLoginThrottle(ratelimit.New(r.Client, r.Prefix, slog.New(slog.DiscardHandler)), 5, 8)
	ctx := context.Background()
	recorded := 0
	for range 50 {
		if th.Record(ctx, "a@example.com") {
			recorded++
		}
	}
	assert.Equal(t, 1, recorded)
	assert.True(t, th.Record(ctx, "b@example.com"))
}

// countCommands counts the commands a client sends to Redis.
type countCommands struct{ n atomic.Int64 }

func (c *countCommands) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *countCommands) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { c.n.Add(1); return next(ctx, cmd) }
}
func (c *countCommands) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func TestBusyKeysLeaseTheirQuotaAndNeverExceedIt(t *testing.T) {
	r := testenv.MustRedis(t)
	var sent countCommands
	r.Client.AddHook(&sent)
	// Two processes share one credential's limit of 600 a minute (burst 600).
	lim := ratelimit.PerMinute(600)
	limiters := []*ratelimit.Limiter{ratelimit.New(r.Client, r.Prefix, slog.New(slog.DiscardHandler)),
		ratelimit.New(r.Client, r.Prefix, slog.New(slog.DiscardHandler))}
	var allowed, requests atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for _, l := range limiters {
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for denied := 0; denied < 3; {
					requests.Add(1)
					if l.Take(context.Background(), "busy", lim).Allowed {
						allowed.Add(1)
						denied = 0
					} else {
						denied++
					}
				}
			}()
		}
	}
	wg.Wait()
	refilled := int64(time.Since(start)/(100*time.Millisecond)) + 1 // 10 a second
	t.Logf("%d allowed of %d requests in %v, %d Redis commands", allowed.Load(), requests.Load(), time.Since(start), sent.n.Load())
	assert.LessOrEqual(t, allowed.Load(), 600+refilled, "never more than the limit across processes")
	assert.GreaterOrEqual(t, allowed.Load(), int64(600-2*30), "at most a lease per process unused")
	assert.Less(t, sent.n.Load(), allowed.Load()/4, "a busy key takes its events in leases")
}

func TestQuietKeysTakeOneEventAtATime(t *testing.T) {
	r := testenv.MustRedis(t)
	l := ratelimit.New(r.Client, r.Prefix, slog.New(slog.DiscardHandler))
	other := ratelimit.New(r.Client, r.Prefix, slog.New(slog.DiscardHandler)) // another process
	lim := ratelimit.Limit{Rate: 600, Burst: 600, Period: time.Hour}          // no refill during the test
	for i := range 5 {
		d := l.Take(context.Background(), "quiet", lim)
		assert.True(t, d.Allowed)
		assert.Equal(t, 599-i, d.Remaining)
		assert.Equal(t, 599-i, other.Peek(context.Background(), "quiet", lim).Remaining, "nothing taken ahead in Redis")
		time.Sleep(60 * time.Millisecond) // 16 a second: below a lease's pace
	}
}

// A key flooded past its limit is denied in the process until Redis's retry time, one
// Redis command for the whole flood, each answer with its Retry-After; a request under
// another limit for the key still asks Redis.
func TestAFloodedKeyIsDeniedWithoutAskingRedisAgain(t *testing.T) {
	r := testenv.MustRedis(t)
	var sent countCommands
	r.Client.AddHook(&sent)
	l := ratelimit.New(r.Client, r.Prefix, slog.New(slog.DiscardHandler))
	lim := ratelimit.Limit{Rate: 5, Burst: 5, Period: time.Hour}
	for range 5 {
		require.True(t, l.Take(context.Background(), "flood", lim).Allowed)
	}
	before := sent.n.Load()
	for i := range 100 {
		d := l.Take(context.Background(), "flood", lim)
		require.False(t, d.Allowed, "request %d", i)
		assert.Greater(t, d.RetryAfter, 10*time.Minute, "request %d: the next event frees in about 12 minutes", i)
	}
	assert.Equal(t, int64(1), sent.n.Load()-before, "only the first denial asks Redis")
	raised := ratelimit.Limit{Rate: 1000, Burst: 1000, Period: 2 * time.Hour} // Redis allows it: a longer tolerance
	assert.True(t, l.Take(context.Background(), "flood", raised).Allowed, "a raised limit is asked of Redis")
}
