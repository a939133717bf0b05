// Package cache is a versioned Redis cache: an entry carries the stream version it was
// built from and is never overwritten by an older one, whoever writes it (a projector
// after commit, or a reader filling a miss).
package cache

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"

	"github.com/chatbotsaas/chatbotd/internal/metrics"
)

// setIfNewer stores, for each key, (version, payload, epoch) unless the stored version is
// at least as new and was written under the same epoch (an entry of another master's
// time is replaced whatever its version). An empty payload is a tombstone: the record is
// gone as of that version. ARGV is the TTL in milliseconds, the epoch, then a version and
// a payload for each key. One call for many keys costs Redis less a key than a call a
// key, pipelined (the figures: BENCHMARKS.md, twenty-seventh pass).
var setIfNewer = redis.NewScript(`
local ttl, epoch = ARGV[1], ARGV[2]
for i, k in ipairs(KEYS) do
  local v = ARGV[2 * i + 1]
  local cur = redis.call('HMGET', k, 'v', 'e')
  if not (cur[1] and (cur[2] or '') == epoch and tonumber(cur[1]) >= tonumber(v)) then
    redis.call('HSET', k, 'v', v, 'd', ARGV[2 * i + 2], 'e', epoch)
    redis.call('PEXPIRE', k, ttl)
  end
end
return 0`)

// setManyChunk is the most keys one call of setIfNewer takes: Redis runs nothing else
// while a script runs, about 1 ms for this many.
const setManyChunk = 200

// Cache is safe for concurrent use.
type Cache struct {
	rdb    redis.UniversalClient
	prefix string
	ttl    time.Duration
	// epoch is the master's identity (Open); nil: entries carry none (tests, Cluster).
	epoch *Epoch
	group singleflight.Group
	// metrics counts Get's hits and misses (nil: not counted).
	metrics *metrics.Metrics
	// downUntil (unix nanoseconds): after Redis failed, the cache answers ErrUnavailable
	// at once until then, rather than make every request wait for Redis's timeout.
	downUntil atomic.Int64
}

// ErrUnavailable is returned while Redis is taken for down after a failure.
var ErrUnavailable = errors.New("cache: redis unavailable")

// downFor is how long Redis is left alone after a failure.
const downFor = 2 * time.Second

func (c *Cache) up() bool { return time.Now().UnixNano() >= c.downUntil.Load() }

// observe takes Redis for down after a failure of its own (a caller giving up is not one).
func (c *Cache) observe(ctx context.Context, err error) error {
	if err != nil && ctx.Err() == nil && !errors.Is(err, ErrMiss) && !errors.Is(err, redis.Nil) && !errors.Is(err, ErrUnavailable) {
		c.downUntil.Store(time.Now().Add(downFor).UnixNano())
	}
	return err
}

// Instrument counts lookups in m (set once, before the cache is used).
func (c *Cache) Instrument(m *metrics.Metrics) { c.metrics = m }

// New returns a cache over rdb whose keys start with prefix.
func New(rdb redis.UniversalClient, prefix string, ttl time.Duration) *Cache {
	return &Cache{rdb: rdb, prefix: prefix, ttl: ttl}
}

// FollowMasters makes entries written under another master than the current one misses
// (see Epoch). Call it once, before the cache is used.
func (c *Cache) FollowMasters(e *Epoch) { c.epoch = e }

// Key builds a key from parts.
func (c *Cache) Key(kind, id string) string { return c.prefix + kind + ":" + id }

// ErrMiss means the key is not cached.
var ErrMiss = errors.New("cache miss")

// Entry is a cached record: Payload is empty for a tombstone.
type Entry struct {
	Version int
	Payload []byte
}

// Get returns the entry, ErrMiss, or a Redis error.
func (c *Cache) Get(ctx context.Context, key string) (Entry, error) {
	e, err := c.get(ctx, key)
	switch {
	case err == nil:
		c.metrics.CacheResult("hit")
	case errors.Is(err, ErrMiss):
		c.metrics.CacheResult("miss")
	default:
		c.metrics.CacheResult("error")
	}
	return e, err
}

func (c *Cache) get(ctx context.Context, key string) (Entry, error) {
	if !c.up() {
		return Entry{}, ErrUnavailable
	}
	vals, err := c.rdb.HMGet(ctx, key, "v", "d", "e").Result()
	if err != nil {
		return Entry{}, c.observe(ctx, err)
	}
	vs, ok1 := vals[0].(string)
	ds, ok2 := vals[1].(string)
	es, _ := vals[2].(string)
	// The epoch is read after the command: a command that reached a new master ran on a
	// connection whose OnConnect has already learnt it.
	if !ok1 || !ok2 || es != c.epoch.current() {
		return Entry{}, ErrMiss
	}
	v, err := strconv.Atoi(vs)
	if err != nil {
		return Entry{}, ErrMiss
	}
	return Entry{Version: v, Payload: []byte(ds)}, nil
}

// Set stores an entry unless a newer one is there.
func (c *Cache) Set(ctx context.Context, key string, e Entry) error {
	if !c.up() {
		return ErrUnavailable
	}
	return c.observe(ctx, setIfNewer.Run(ctx, c.rdb, []string{key}, c.ttl.Milliseconds(), c.epoch.current(), e.Version, e.Payload).Err())
}

// SetMany stores each entry under its key, unless a newer one is there, in one round
// trip: a pipeline of setIfNewer's calls, each for up to setManyChunk keys, or for one
// key on a Redis Cluster, where the keys of one call must share a slot.
func (c *Cache) SetMany(ctx context.Context, keys []string, entries []Entry) error {
	if len(keys) == 0 {
		return nil
	}
	if !c.up() {
		return ErrUnavailable
	}
	chunk := setManyChunk
	if _, ok := c.rdb.(*redis.ClusterClient); ok {
		chunk = 1
	}
	ttl, epoch := c.ttl.Milliseconds(), c.epoch.current()
	run := func(eval func(p redis.Pipeliner, keys []string, args ...any)) error {
		pipe := c.rdb.Pipeline()
		for from := 0; from < len(keys); from += chunk {
			to := min(from+chunk, len(keys))
			args := make([]any, 0, 2+2*(to-from))
			args = append(args, ttl, epoch)
			for i := from; i < to; i++ {
				args = append(args, entries[i].Version, entries[i].Payload)
			}
			eval(pipe, keys[from:to], args...)
		}
		_, err := pipe.Exec(ctx)
		return err
	}
	err := run(func(p redis.Pipeliner, keys []string, args ...any) { setIfNewer.EvalSha(ctx, p, keys, args...) })
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		// The script is not loaded yet (a new or flushed Redis): send its text this once.
		err = run(func(p redis.Pipeliner, keys []string, args ...any) { setIfNewer.Eval(ctx, p, keys, args...) })
	}
	return c.observe(ctx, err)
}

// Fill loads a missing entry once however many callers miss at the same time (no
// stampede), stores it, and returns it. A Redis failure is not the caller's problem:
// the loaded entry is returned anyway.
func (c *Cache) Fill(ctx context.Context, key string, load func(ctx context.Context) (Entry, error)) (Entry, error) {
	v, err, _ := c.group.Do(key, func() (any, error) {
		e, err := load(ctx)
		if err != nil {
			return Entry{}, err
		}
		if e.Version > 0 { // a record that never existed is not cached: it may appear any moment
			_ = c.Set(ctx, key, e)
		}
		return e, nil
	})
	if err != nil {
		return Entry{}, err
	}
	return v.(Entry), nil
}
