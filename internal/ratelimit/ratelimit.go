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

	// leases is key → *lease. A sync.Map because every request reads it and keys are
	// rarely added: its reads take no lock that a busy process's requests would queue on.
	leases  sync.Map
	nLeases atomic.Int64

	mu    sync.Mutex // guards local, and sweeps of leases
	local map[string]*localEntry
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
// A request takes an event from the current grant with one atomic decrement. When the
// grant is used up or expired, one request asks Redis for the next while the key's other
// requests wait for it, and wake together when it ends. No lock is held across the
// round trip: a lock would hand itself to its waiters one at a time, each first having
// to be scheduled, so that under a backlog of requests the key served fewer the longer
// its queue grew (the collapse BENCHMARKS.md's open-loop section describes).
//
// Hand-written: redis_rate has no notion of taking ahead; AllowAtMost is its building
// block for it.
type lease struct {
	cur  atomic.Pointer[grant] // the last grant Redis gave; nil before the first
	seen atomic.Int64          // unix nanoseconds of the key's last request, for sweeps

	mu sync.Mutex // guards the fields below; never held across a round trip
	// refill, while a take from Redis is in flight, is closed when it ends.
	refill chan struct{}
	// waiting counts the requests waiting on refill; demand is how many waited on the
	// last one, which the next take asks for at least (they use them at once).
	waiting, demand int
	size            int // how many events the next take asks for, by the key's pace
	// deniedUntil is when Redis said, denying an event of limit denied, that the next
	// one frees. Until then the key's events are denied here, without asking Redis: none
	// can free sooner (other processes only take more), and a key flooded past its limit
	// would otherwise make one Redis round trip per request.
	deniedUntil time.Time
	denied      Limit
}

// grant is what one take from Redis gave.
type grant struct {
	left      atomic.Int64 // events not used yet; below zero once overdrawn
	remaining int          // the bucket's remaining events in Redis after the take
	taken     time.Time
}

// leaseLife is how long a lease's events may be used.
const leaseLife = 100 * time.Millisecond

// maxLease bounds a lease sized by the key's pace: at most a twentieth of the burst and
// 64 events.
func maxLease(lim Limit) int { return min(max(lim.Burst/20, 1), 64) }

// maxDemand bounds a lease sized by the requests that waited for the last one: at most a
// twentieth of the burst and 1,024 events. Those are used as soon as they come, so a
// larger lease here loses nothing.
func maxDemand(lim Limit) int { return min(max(lim.Burst/20, 1), 1024) }

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

// Take counts one event against key and says whether it was allowed. When ctx ends
// while the key waits for Redis, the event is not allowed and not counted (RetryAfter 0):
// its request is gone.
func (l *Limiter) Take(ctx context.Context, key string, lim Limit) Decision {
	le := l.lease(key, time.Now())
	for {
		if !l.redisUp() {
			return l.takeLocal(key, lim, 1)
		}
		now := time.Now()
		g := le.cur.Load()
		if g != nil && now.Sub(g.taken) < leaseLife {
			if left := g.left.Add(-1); left >= 0 {
				return Decision{Allowed: true, Limit: lim.Burst, Remaining: g.remaining + int(left)}
			}
		}
		le.mu.Lock()
		if now.Before(le.deniedUntil) && le.denied == lim {
			le.mu.Unlock()
			return Decision{Limit: lim.Burst, RetryAfter: le.deniedUntil.Sub(now)}
		}
		if le.cur.Load() != g { // a take ended since: try its grant
			le.mu.Unlock()
			continue
		}
		if wait := le.refill; wait != nil {
			le.waiting++
			le.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return Decision{Limit: lim.Burst}
			}
		}
		n := le.nextSize(g, now, lim)
		done := make(chan struct{})
		le.refill = done
		le.mu.Unlock()

		res, err := l.redis.AllowAtMost(ctx, l.prefix+key, lim, n)

		le.mu.Lock()
		le.refill, le.demand, le.waiting = nil, le.waiting, 0
		var d Decision
		switch {
		case err != nil:
		case res.Allowed == 0:
			retry := max(res.RetryAfter, 0)
			le.deniedUntil, le.denied = now.Add(retry), lim
			d = Decision{Limit: lim.Burst, Remaining: res.Remaining, RetryAfter: retry}
		default:
			ng := &grant{remaining: res.Remaining, taken: now}
			ng.left.Store(int64(res.Allowed - 1))
			le.cur.Store(ng)
			d = Decision{Allowed: true, Limit: lim.Burst, Remaining: res.Remaining + res.Allowed - 1}
		}
		le.mu.Unlock()
		close(done)
		if err != nil {
			if ctx.Err() != nil { // this request is gone; Redis is not down
				return Decision{Limit: lim.Burst}
			}
			l.redisFailed(err)
			return l.takeLocal(key, lim, 1)
		}
		return d
	}
}

// nextSize is how many events the next take asks for, after grant g; the caller holds
// le.mu.
func (le *lease) nextSize(g *grant, now time.Time, lim Limit) int {
	switch {
	case g == nil || le.size == 0:
		le.size = 1
	case g.left.Load() <= 0 && now.Sub(g.taken) < leaseLife/2:
		le.size = min(le.size*2, maxLease(lim)) // used up fast: take more at once
	case g.left.Load() > 0:
		le.size = max(le.size/2, 1) // expired unused: take fewer
	}
	return min(max(le.size, le.demand), maxDemand(lim))
}

// lease returns key's lease, made on first use; leases not used for a minute are dropped
// when there are many.
func (l *Limiter) lease(key string, now time.Time) *lease {
	v, ok := l.leases.Load(key)
	if !ok {
		var loaded bool
		v, loaded = l.leases.LoadOrStore(key, &lease{})
		if !loaded && l.nLeases.Add(1) > maxKeys {
			l.sweepLeases(key, now)
		}
	}
	le := v.(*lease)
	le.seen.Store(now.UnixNano())
	return le
}

// sweepLeases drops the leases not used for a minute, but fresh's (just made). One sweep
// runs at a time; a key made meanwhile does not wait for it.
func (l *Limiter) sweepLeases(fresh string, now time.Time) {
	if !l.mu.TryLock() {
		return
	}
	defer l.mu.Unlock()
	l.leases.Range(func(k, v any) bool {
		if k != fresh && now.Sub(time.Unix(0, v.(*lease).seen.Load())) > time.Minute {
			l.leases.Delete(k)
			l.nLeases.Add(-1)
		}
		return true
	})
}

// leased is how many of key's events this process holds in an unexpired lease.
func (l *Limiter) leased(key string) int {
	v, ok := l.leases.Load(key)
	if !ok {
		return 0
	}
	g := v.(*lease).cur.Load()
	if g == nil || time.Since(g.taken) >= leaseLife {
		return 0
	}
	return max(int(g.left.Load()), 0)
}

// Peek says whether one more event would be allowed, counting nothing.
func (l *Limiter) Peek(ctx context.Context, key string, lim Limit) Decision {
	if !l.redisUp() {
		return l.takeLocal(key, lim, 0)
	}
	res, err := l.redis.AllowN(ctx, l.prefix+key, lim, 0)
	if err != nil {
		if ctx.Err() == nil {
			l.redisFailed(err)
		}
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

func (l *Limiter) takeLocal(key string, lim Limit, n int) Decision {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	e, ok := l.local[key]
	if !ok {
		if len(l.local) > maxKeys {
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
