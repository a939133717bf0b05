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

// setIfNewer stores (version, payload, epoch) unless the stored version is at least as
// new and was written under the same epoch (an entry of another master's time is
// replaced whatever its version). An empty payload is a tombstone: the record is gone as
// of that version.
var setIfNewer = redis.NewScript(`
local cur = redis.call('HMGET', KEYS[1], 'v', 'e')
if cur[1] and (cur[2] or '') == ARGV[4] and tonumber(cur[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'd', ARGV[2], 'e', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1`)

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
	return c.observe(ctx, setIfNewer.Run(ctx, c.rdb, []string{key}, e.Version, e.Payload, c.ttl.Milliseconds(), c.epoch.current()).Err())
}

// SetMany stores each entry under its key, unless a newer one is there, in one round
// trip (a pipeline of the same script Set runs).
func (c *Cache) SetMany(ctx context.Context, keys []string, entries []Entry) error {
	if len(keys) == 0 {
		return nil
	}
	if !c.up() {
		return ErrUnavailable
	}
	run := func(eval func(redis.Pipeliner, string, Entry)) error {
		pipe := c.rdb.Pipeline()
		for i, k := range keys {
			eval(pipe, k, entries[i])
		}
		_, err := pipe.Exec(ctx)
		return err
	}
	ttl, epoch := c.ttl.Milliseconds(), c.epoch.current()
	err := run(func(p redis.Pipeliner, k string, e Entry) {
		setIfNewer.EvalSha(ctx, p, []string{k}, e.Version, e.Payload, ttl, epoch)
	})
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		// The script is not loaded yet (a new or flushed Redis): send its text this once.
		err = run(func(p redis.Pipeliner, k string, e Entry) {
			setIfNewer.Eval(ctx, p, []string{k}, e.Version, e.Payload, ttl, epoch)
		})
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
