package cache_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/cache"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

func TestNeverAnOlderVersionOverANewer(t *testing.T) {
	r := testenv.MustRedis(t)
	c := cache.New(r.Client, r.Prefix, time.Minute)
	ctx := context.Background()
	key := c.Key("user", "1")
	_, err := c.Get(ctx, key)
	assert.ErrorIs(t, err, cache.ErrMiss)

	require.NoError(t, c.Set(ctx, key, cache.Entry{Version: 2, Payload: []byte("two")}))
	require.NoError(t, c.Set(ctx, key, cache.Entry{Version: 1, Payload: []byte("one")}))
	got, err := c.Get(ctx, key)
	require.NoError(t, err)
	assert.Equal(t, cache.Entry{Version: 2, Payload: []byte("two")}, got)

	require.NoError(t, c.Set(ctx, key, cache.Entry{Version: 3})) // tombstone
	require.NoError(t, c.Set(ctx, key, cache.Entry{Version: 2, Payload: []byte("two")}))
	got, err = c.Get(ctx, key)
	require.NoError(t, err)
	assert.Equal(t, 3, got.Version)
	assert.Empty(t, got.Payload)
	ttl := r.Client.PTTL(ctx, key).Val()
	assert.Greater(t, ttl, 50*time.Second, "entries expire as a safety net")
}

func TestFillLoadsOnceForConcurrentMisses(t *testing.T) {
	r := testenv.MustRedis(t)
	c := cache.New(r.Client, r.Prefix, time.Minute)
	var loads atomic.Int32
	release := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e, err := c.Fill(context.Background(), c.Key("user", "x"), func(context.Context) (cache.Entry, error) {
				loads.Add(1)
				<-release
				return cache.Entry{Version: 4, Payload: []byte("x")}, nil
			})
			assert.NoError(t, err)
			assert.Equal(t, 4, e.Version)
		}()
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	assert.EqualValues(t, 1, loads.Load())
	got, err := c.Get(context.Background(), c.Key("user", "x"))
	require.NoError(t, err)
	assert.Equal(t, 4, got.Version)

	// A record that never existed (version 0) is not cached.
	_, err = c.Fill(context.Background(), c.Key("user", "none"), func(context.Context) (cache.Entry, error) { return cache.Entry{}, nil })
	require.NoError(t, err)
	_, err = c.Get(context.Background(), c.Key("user", "none"))
	assert.ErrorIs(t, err, cache.ErrMiss)
}

func TestSetManyKeepsEachKeysNewestVersionInOneRoundTrip(t *testing.T) {
	r := testenv.MustRedis(t)
	c := cache.New(r.Client, r.Prefix, time.Minute)
	ctx := context.Background()
	a, b, n := c.Key("user", "a"), c.Key("user", "b"), c.Key("user", "new")
	require.NoError(t, c.Set(ctx, a, cache.Entry{Version: 5, Payload: []byte("a5")}))
	require.NoError(t, c.Set(ctx, b, cache.Entry{Version: 1, Payload: []byte("b1")}))
	// The script is sent by its text when Redis does not know it (a new or flushed server).
	require.NoError(t, r.Client.ScriptFlush(ctx).Err())

	require.NoError(t, c.SetMany(ctx, []string{a, b, n},
		[]cache.Entry{{Version: 4, Payload: []byte("a4")}, {Version: 2, Payload: []byte("b2")}, {Version: 1, Payload: []byte("n1")}}))
	for key, want := range map[string]cache.Entry{a: {5, []byte("a5")}, b: {2, []byte("b2")}, n: {1, []byte("n1")}} {
		got, err := c.Get(ctx, key)
		require.NoError(t, err)
		assert.Equal(t, want, got, key)
		assert.Greater(t, r.Client.PTTL(ctx, key).Val(), 50*time.Second, key)
	}
	require.NoError(t, c.SetMany(ctx, []string{b}, []cache.Entry{{Version: 3}})) // a tombstone, by the loaded script
	got, err := c.Get(ctx, b)
	require.NoError(t, err)
	assert.Equal(t, cache.Entry{Version: 3, Payload: []byte{}}, got)
	require.NoError(t, c.SetMany(ctx, nil, nil))

	// More keys than one call of the script takes: each keeps its own newest version.
	var keys []string
	var entries []cache.Entry
	for i := range 450 {
		keys = append(keys, c.Key("user", "many-"+strconv.Itoa(i)))
		entries = append(entries, cache.Entry{Version: 2, Payload: []byte("v2-" + strconv.Itoa(i))})
	}
	for _, i := range []int{0, 199, 200, 449} {
		require.NoError(t, c.Set(ctx, keys[i], cache.Entry{Version: 3, Payload: []byte("newer")}))
	}
	require.NoError(t, c.SetMany(ctx, keys, entries))
	for i, k := range keys {
		want := entries[i]
		if i == 0 || i == 199 || i == 200 || i == 449 {
			want = cache.Entry{Version: 3, Payload: []byte("newer")}
		}
		got, err := c.Get(ctx, k)
		require.NoError(t, err, k)
		assert.Equal(t, want, got, k)
	}
}

// After Redis fails, the cache answers ErrUnavailable at once for a while instead of
// making every request wait for Redis's timeout; a caller's own cancellation is no failure.
func TestUnavailableRedisIsLeftAloneForAWhile(t *testing.T) {
	ctx := context.Background()
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: time.Second})
	defer dead.Close()
	c := cache.New(dead, "test:", time.Minute)

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err := c.Get(cancelled, c.Key("user", "1"))
	require.Error(t, err)
	_, err = c.Get(ctx, c.Key("user", "1"))
	require.Error(t, err)
	assert.NotErrorIs(t, err, cache.ErrUnavailable, "a cancelled call did not open the breaker: Redis was tried")

	_, err = c.Get(ctx, c.Key("user", "1"))
	assert.ErrorIs(t, err, cache.ErrUnavailable)
	assert.ErrorIs(t, c.Set(ctx, c.Key("user", "1"), cache.Entry{Version: 1, Payload: []byte("x")}), cache.ErrUnavailable)
	assert.ErrorIs(t, c.SetMany(ctx, []string{c.Key("user", "1")}, []cache.Entry{{Version: 1, Payload: []byte("x")}}), cache.ErrUnavailable)
	loads := 0
	e, err := c.Fill(ctx, c.Key("user", "1"), func(context.Context) (cache.Entry, error) {
		loads++
		return cache.Entry{Version: 3, Payload: []byte("y")}, nil
	})
	require.NoError(t, err, "a fill still answers from its loader")
	assert.Equal(t, 3, e.Version)
	assert.Equal(t, 1, loads)
}
