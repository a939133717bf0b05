package cache

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Epoch is the identity (run id) of the Redis master the process talks to now, learned
// on every new connection. Entries carry the epoch they were written under and are
// misses under another: after a failover, what the old master acknowledged and never
// passed to the promoted replica (a newer entry, or a tombstone) is lost, and the
// replica's older copy would otherwise be served as if current until its TTL.
type Epoch struct{ v atomic.Pointer[string] }

func (e *Epoch) current() string {
	if e == nil {
		return ""
	}
	if p := e.v.Load(); p != nil {
		return *p
	}
	return ""
}

// learn reads the run id of the server a new connection reached.
func (e *Epoch) learn(ctx context.Context, cn *redis.Conn) error {
	info, err := cn.Info(ctx, "server").Result()
	if err != nil {
		return err
	}
	var id string
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		if line == "redis_mode:sentinel" {
			return nil // go-redis gives the sentinels' connections the same hook
		}
		if v, ok := strings.CutPrefix(line, "run_id:"); ok {
			id = v
		}
	}
	if id != "" {
		e.v.Store(&id)
	}
	return nil
}

// URLSchemes are the schemes REDIS_URL may have (Open): one server, Sentinel, Cluster,
// each with or without TLS.
var URLSchemes = []string{"redis", "rediss", "redis-sentinel", "rediss-sentinel", "redis-cluster", "rediss-cluster"}

// Open connects to REDIS_URL:
//
//	redis://[user:password@]host:port/db            one server (rediss:// with TLS)
//	redis-sentinel://[user:password@]sentinel:port/db?master_name=NAME&addr=sentinel2:port&addr=...
//	redis-cluster://[user:password@]node:port?addr=node2:port&addr=...
//
// Behind Sentinel (or on one server) the returned epoch follows the master, and a cache
// built with it never serves an entry written under another master. A Cluster has a
// master per shard, so there it is nil: a shard's failover may serve an entry whose
// later invalidation was lost, until its TTL.
//
// On one server (redis://, database 0), local keeps a copy of what the process reads
// (see Local); Sentinel, Cluster and other databases read Redis every time.
func Open(raw string, local Local) (redis.UniversalClient, *Epoch, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return nil, nil, fmt.Errorf("REDIS_URL: not a URL")
	}
	tls := strings.HasPrefix(scheme, "rediss")
	base := map[bool]string{true: "rediss://", false: "redis://"}[tls]
	epoch := &Epoch{}
	const dial, read = 2 * time.Second, time.Second
	switch strings.TrimPrefix(scheme, map[bool]string{true: "rediss", false: "redis"}[tls]) {
	case "":
		opt, err := redis.ParseURL(raw)
		if err != nil {
			return nil, nil, fmt.Errorf("REDIS_URL: %w", err)
		}
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = dial, read, read
		opt.OnConnect = epoch.learn
		local.apply(opt)
		return learnt(redis.NewClient(opt)), epoch, nil
	case "-sentinel":
		opt, err := redis.ParseFailoverURL(base + rest)
		if err != nil {
			return nil, nil, fmt.Errorf("REDIS_URL: %w", err)
		}
		if opt.MasterName == "" {
			return nil, nil, fmt.Errorf("REDIS_URL: a redis-sentinel:// URL needs master_name")
		}
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = dial, read, read
		opt.OnConnect = epoch.learn
		return learnt(redis.NewFailoverClient(opt)), epoch, nil
	case "-cluster":
		opt, err := redis.ParseClusterURL(base + rest)
		if err != nil {
			return nil, nil, fmt.Errorf("REDIS_URL: %w", err)
		}
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = dial, read, read
		return redis.NewClusterClient(opt), nil, nil
	}
	return nil, nil, fmt.Errorf("REDIS_URL: scheme %q is not redis, rediss, redis-sentinel or redis-cluster", scheme)
}

// Local is the process's copy of the entries it reads, kept by go-redis's client-side
// caching: Redis tracks the keys each connection read and pushes an invalidation when
// one changes, whoever changed it (a projector in another process, a reader filling a
// miss), and go-redis drops the copy when the invalidation is read. A cached read that
// hits the copy costs no round trip: under one hot key it was a third of a cached GET's
// CPU (BENCHMARKS.md, issue 23's ninth pass).
//
// A copy can be served after Redis changed it: until its invalidation is read (at the
// connection's next command, or by go-redis's sweep of idle connections every
// LocalDrainInterval), and never longer than MaxStaleness, which also bounds a copy whose
// invalidation was lost with its connection. That is within what an eventually
// consistent read promises; a read that must see a version (a consistency token)
// compares the entry's version and reads the database when it is older (readmodel).
type Local struct {
	// Entries is how many entries the copy holds at most; 0 turns it off.
	Entries int
	// MaxStaleness is the longest a copy is served without reading Redis again.
	MaxStaleness time.Duration
}

// LocalDrainInterval is how often go-redis reads the invalidations waiting on idle
// connections. Its default, 5 ms, cost an idle process about 4% of a core more than no
// copy at all; at 25 ms about 1%. An invalidation waiting on an idle connection is read
// within about that much (one on a busy connection, at its next command).
const LocalDrainInterval = 25 * time.Millisecond

// apply enables the copy on opt when it can be kept: go-redis keeps it only on database
// 0 over RESP3, and would log a warning for anything else.
func (l Local) apply(opt *redis.Options) {
	if l.Entries <= 0 || opt.DB != 0 || (opt.Protocol != 0 && opt.Protocol != 3) {
		return
	}
	opt.ClientSideCacheConfig = &redis.ClientSideCacheConfig{MaxEntries: l.Entries, MaxStaleness: l.MaxStaleness,
		DrainInterval: LocalDrainInterval}
}

// learnt connects once, so that the first writes already carry the master's epoch (an
// entry written before it is known carries none, and is a miss later: safe, but a
// waste). Redis being down now is not an error: the epoch is learnt on the first
// connection that succeeds.
func learnt(c *redis.Client) *redis.Client {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = c.Ping(ctx).Err()
	return c
}
