package ratelimit_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"

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
		_, blocked := th.Blocked(ctx, "1.1.1.1", "a@example.com")
		assert.False(t, blocked)
		th.Failed(ctx, "1.1.1.1", "a@example.com")
	}
	retry, blocked := th.Blocked(ctx, "1.1.1.1", "a@example.com")
	assert.True(t, blocked)
	assert.Greater(t, retry, time.Duration(0))
	_, blocked = th.Blocked(ctx, "1.1.1.1", "b@example.com")
	assert.False(t, blocked, "another email is not slowed")
	// Across IPs, the per-email limit (8) holds.
	for i := 0; i < 3; i++ {
		th.Failed(ctx, "2.2.2.2", "a@example.com")
	}
	_, blocked = th.Blocked(ctx, "3.3.3.3", "a@example.com")
	assert.True(t, blocked)
}
