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

	mu     sync.Mutex
	local  map[string]*localEntry
	leases map[string]*lease
}

// lease is a share of a key's quota taken from Redis ahead of use, so that a busy key
// costs one round trip per lease instead of one per request. Every event is still taken
// from the GCRA bucket in Redis, so the limit holds across all processes; what a lease
// may cost is the events it took and did not use before it expired (they are counted
// and lost). Its size adapts to the key's rate in this process: it doubles while each
// lease is used up within half its life and halves when one expires unused, so a key
// below about 20 events a second in one process takes them one at a time, exactly as
// without leases. Small limits never lease (see maxLease).
//
// Hand-written: redis_rate has no notion of taking ahead; AllowAtMost is its building
// block for it.
type lease struct {
	mu        sync.Mutex
	left      int       // events taken from Redis and not used yet
	remaining int       // the bucket's remaining events in Redis after the last take
	taken     time.Time // when the last lease was taken
	size      int       // how many events the next take asks for
	seen      time.Time // guarded by the Limiter's mu, not the lease's
	// deniedUntil is when Redis said, denying an event of limit denied, that the next
	// one frees. Until then the key's events are denied here, without asking Redis: none
	// can free sooner (other processes only take more), and a key flooded past its limit
	// would otherwise make one Redis round trip per request, each under mu, its requests
	// queueing behind one another.
	deniedUntil time.Time
	denied      Limit
}

// leaseLife is how long a lease's events may be used.
const leaseLife = 100 * time.Millisecond

// maxLease bounds a lease: at most a twentieth of the burst and 64 events.
func maxLease(lim Limit) int { return min(max(lim.Burst/20, 1), 64) }

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
	return &Limiter{redis: redis_rate.NewLimiter(rdb), prefix: prefix + "rl:", logger: logger, local: map[string]*localEntry{},
		leases: map[string]*lease{}}
}

func emission(l Limit) time.Duration { return l.Period / time.Duration(l.Rate) }

// Take counts one event against key and says whether it was allowed.
func (l *Limiter) Take(ctx context.Context, key string, lim Limit) Decision {
	if !l.redisUp() {
		return l.takeLocal(key, lim, 1)
	}
	// The key's lease stays locked while a new one is asked of Redis: a busy key's other
	// requests wait for that one round trip instead of each making its own.
	le := l.lease(key)
	le.mu.Lock()
	defer le.mu.Unlock()
	now := time.Now()
	if le.left > 0 && now.Sub(le.taken) < leaseLife {
		le.left--
		return Decision{Allowed: true, Limit: lim.Burst, Remaining: le.remaining + le.left}
	}
	if now.Before(le.deniedUntil) && le.denied == lim {
		return Decision{Limit: lim.Burst, RetryAfter: le.deniedUntil.Sub(now)}
	}
	switch {
	case le.size == 0:
		le.size = 1
	case le.left == 0 && now.Sub(le.taken) < leaseLife/2:
		le.size = min(le.size*2, maxLease(lim)) // used up fast: take more at once
	case le.left > 0:
		le.size = max(le.size/2, 1) // expired unused: take fewer
	}
	le.left = 0
	res, err := l.redis.AllowAtMost(ctx, l.prefix+key, lim, min(le.size, maxLease(lim)))
	if err != nil {
		l.redisFailed(err)
		return l.takeLocal(key, lim, 1)
	}
	if res.Allowed == 0 {
		retry := max(res.RetryAfter, 0)
		le.deniedUntil, le.denied = now.Add(retry), lim
		return Decision{Limit: lim.Burst, Remaining: res.Remaining, RetryAfter: retry}
	}
	le.left, le.remaining, le.taken = res.Allowed-1, res.Remaining, now
	return Decision{Allowed: true, Limit: lim.Burst, Remaining: le.remaining + le.left}
}

// lease returns key's lease, made on first use; leases not used for a minute are dropped
// when there are many.
func (l *Limiter) lease(key string) *lease {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	le, ok := l.leases[key]
	if !ok {
		sweep(l.leases, func(v *lease) time.Time { return v.seen }, now, time.Minute)
		le = &lease{}
		l.leases[key] = le
	}
	le.seen = now
	return le
}

// leased is how many of key's events this process holds in an unexpired lease.
func (l *Limiter) leased(key string) int {
	l.mu.Lock()
	le, ok := l.leases[key]
	l.mu.Unlock()
	if !ok {
		return 0
	}
	le.mu.Lock()
	defer le.mu.Unlock()
	if time.Since(le.taken) >= leaseLife {
		return 0
	}
	return le.left
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
	held := l.leased(key)
	d := Decision{Allowed: res.Remaining+held > 0, Limit: lim.Burst, Remaining: res.Remaining + held}
	if !d.Allowed {
		// ResetAfter is until the bucket is full again; one slot frees one emission
		// interval after it starts refilling.
		d.RetryAfter = max(res.ResetAfter-time.Duration(lim.Burst-1)*emission(lim), time.Second)
	}
	return d
}

// maxKeys is how many keys a limiter remembers before it drops the ones not seen lately.
const maxKeys = 50000

// sweep drops the entries of m not seen within idle, once m holds more than maxKeys. The
// caller holds the limiter's mu (which guards seen).
func sweep[V any](m map[string]V, seen func(V) time.Time, now time.Time, idle time.Duration) {
	if len(m) <= maxKeys {
		return
	}
	for k, v := range m {
		if now.Sub(seen(v)) > idle {
			delete(m, k)
		}
	}
}

func (l *Limiter) takeLocal(key string, lim Limit, n int) Decision {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	e, ok := l.local[key]
	if !ok {
		sweep(l.local, func(v *localEntry) time.Time { return v.seen }, now, 2*lim.Period)
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
