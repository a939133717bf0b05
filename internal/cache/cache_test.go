package cache_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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
