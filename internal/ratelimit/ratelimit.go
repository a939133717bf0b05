// Package ratelimit limits requests with GCRA in Redis (go-redis/redis_rate), shared by
// every instance. When Redis cannot be reached it falls back to a limiter in this
// process with the same limits: slower to converge across instances, never unlimited.
package ratelimit

import (
	"context"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"
)

// Limit is a number of events per period, with a burst of the same size.
type Limit = redis_rate.Limit

// PerMinute is n events a minute.
func PerMinute(n int) Limit { return redis_rate.PerMinute(n) }

// Decision is the outcome of a check.
type Decision struct {
	Allowed    bool
	Limit      int
	Remaining  int
	RetryAfter time.Duration // when not allowed: until the next event is
}

// Limiter is safe for concurrent use.
type Limiter struct {
	redis  *redis_rate.Limiter
	prefix string
	logger *slog.Logger

	// downUntil (unix nanoseconds) is when Redis is tried again after a failure: until
	// then every decision is local, so an outage does not add a dial timeout to every
	// request.
	downUntil atomic.Int64

	mu    sync.Mutex
	local map[string]*localEntry
}

// redisDownFor is how long the limiter stays local after a Redis error.
const redisDownFor = 5 * time.Second

func (l *Limiter) redisUp() bool { return time.Now().UnixNano() >= l.downUntil.Load() }

func (l *Limiter) redisFailed(err error) {
	if l.redisUp() {
		l.logger.Warn("rate limiter: redis unavailable, limiting in this process", "error", err)
	}
	l.downUntil.Store(time.Now().Add(redisDownFor).UnixNano())
}

type localEntry struct {
	lim  *rate.Limiter
	seen time.Time
}

// New returns a limiter whose keys start with prefix.
func New(rdb redis.UniversalClient, prefix string, logger *slog.Logger) *Limiter {
	return &Limiter{redis: redis_rate.NewLimiter(rdb), prefix: prefix + "rl:", logger: logger, local: map[string]*localEntry{}}
}

func emission(l Limit) time.Duration { return l.Period / time.Duration(l.Rate) }

// Take counts one event against key and says whether it was allowed.
func (l *Limiter) Take(ctx context.Context, key string, lim Limit) Decision {
	if !l.redisUp() {
		return l.takeLocal(key, lim, 1)
	}
	res, err := l.redis.Allow(ctx, l.prefix+key, lim)
	if err != nil {
		l.redisFailed(err)
		return l.takeLocal(key, lim, 1)
	}
	return Decision{Allowed: res.Allowed > 0, Limit: lim.Burst, Remaining: res.Remaining, RetryAfter: max(res.RetryAfter, 0)}
}

// Peek says whether one more event would be allowed, counting nothing.
func (l *Limiter) Peek(ctx context.Context, key string, lim Limit) Decision {
	if !l.redisUp() {
		return l.takeLocal(key, lim, 0)
	}
	res, err := l.redis.AllowN(ctx, l.prefix+key, lim, 0)
	if err != nil {
		l.redisFailed(err)
		return l.takeLocal(key, lim, 0)
	}
	d := Decision{Allowed: res.Remaining > 0, Limit: lim.Burst, Remaining: res.Remaining}
	if !d.Allowed {
		// ResetAfter is until the bucket is full again; one slot frees one emission
		// interval after it starts refilling.
		d.RetryAfter = max(res.ResetAfter-time.Duration(lim.Burst-1)*emission(lim), time.Second)
	}
	return d
}

func (l *Limiter) takeLocal(key string, lim Limit, n int) Decision {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	e, ok := l.local[key]
	if !ok {
		if len(l.local) > 50000 {
			for k, v := range l.local {
				if now.Sub(v.seen) > 2*lim.Period {
					delete(l.local, k)
				}
			}
		}
		e = &localEntry{lim: rate.NewLimiter(rate.Every(emission(lim)), lim.Burst)}
		l.local[key] = e
	}
	e.seen = now
	tokens := e.lim.TokensAt(now)
	d := Decision{Limit: lim.Burst}
	if n == 0 {
		d.Allowed = tokens >= 1
	} else {
		d.Allowed = e.lim.AllowN(now, n)
		tokens = e.lim.TokensAt(now)
	}
	d.Remaining = max(int(math.Floor(tokens)), 0)
	if !d.Allowed {
		d.RetryAfter = max(time.Duration((1-tokens)*float64(emission(lim))), time.Second)
	}
	return d
}
