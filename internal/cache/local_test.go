package cache_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/cache"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// mustOpen is a process's cache over url (cache.Open, as serve does), closed when tb ends.
func mustOpen(tb testing.TB, url, prefix string, local cache.Local) (*cache.Cache, *redis.Client) {
	tb.Helper()
	rdb, epoch, err := cache.Open(url, local)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = rdb.Close() })
	c := cache.New(rdb, prefix, time.Minute)
	c.FollowMasters(epoch)
	return c, rdb.(*redis.Client)
}

// eventually waits up to two seconds for c to hold want under key.
func eventually(t *testing.T, c *cache.Cache, key string, want cache.Entry) {
	t.Helper()
	start := time.Now()
	var got cache.Entry
	var err error
	for time.Since(start) < 2*time.Second {
		if got, err = c.Get(context.Background(), key); err == nil && got.Version == want.Version {
			assert.Equal(t, string(want.Payload), string(got.Payload))
			t.Logf("version %d read %s after it was written", want.Version, time.Since(start).Round(time.Millisecond))
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("%s: still %+v (%v) two seconds after version %d was written", key, got, err, want.Version)
}

// Two processes: one reads an entry over and over, served from its copy, while the
// other writes newer versions. The reader's copy lives an hour here, so only Redis's
// invalidation can bring it the new versions.
func TestALocalCopyFollowsWritesFromAnotherProcess(t *testing.T) {
	r := testenv.MustRedis(t)
	local := cache.Local{Entries: 100, MaxStaleness: time.Hour}
	reader, rdb := mustOpen(t, r.URL, r.Prefix, local)
	writer, _ := mustOpen(t, r.URL, r.Prefix, local)
	ctx := context.Background()
	key := reader.Key("user", "1")

	one := cache.Entry{Version: 1, Payload: []byte(`{"name":"one"}`)}
	require.NoError(t, writer.Set(ctx, key, one))
	eventually(t, reader, key, one)
	before := rdb.CSCStats().Hits
	for range 20 {
		got, err := reader.Get(ctx, key)
		require.NoError(t, err)
		require.Equal(t, one, got)
	}
	assert.GreaterOrEqual(t, rdb.CSCStats().Hits-before, uint64(20), "repeated reads are served from the process's copy")

	two := cache.Entry{Version: 2, Payload: []byte(`{"name":"two"}`)}
	require.NoError(t, writer.Set(ctx, key, two))
	eventually(t, reader, key, two)

	gone := cache.Entry{Version: 3} // a tombstone
	require.NoError(t, writer.Set(ctx, key, gone))
	eventually(t, reader, key, gone)

	// The reader's own write (a miss filled from the database) reaches its copy too.
	four := cache.Entry{Version: 4, Payload: []byte(`{"name":"four"}`)}
	require.NoError(t, reader.Set(ctx, key, four))
	eventually(t, reader, key, four)
	eventually(t, writer, key, four)
}

// The copy is kept only when asked for and only where go-redis can keep it coherent:
// one server, database 0. Elsewhere every read goes to Redis.
func TestALocalCopyIsKeptOnlyWhereAskedAndPossible(t *testing.T) {
	r := testenv.MustRedis(t)
	ctx := context.Background()
	for name, tc := range map[string]struct {
		url   string
		local cache.Local
	}{
		"off":        {r.URL, cache.Local{}},
		"database 1": {strings.TrimSuffix(strings.TrimRight(r.URL, "0123456789"), "/") + "/1", cache.Local{Entries: 100, MaxStaleness: time.Hour}},
	} {
		t.Run(name, func(t *testing.T) {
			c, rdb := mustOpen(t, tc.url, r.Prefix, tc.local)
			key := c.Key("user", name)
			t.Cleanup(func() { rdb.Del(context.Background(), key) })
			require.NoError(t, c.Set(ctx, key, cache.Entry{Version: 1, Payload: []byte("x")}))
			for range 5 {
				_, err := c.Get(ctx, key)
				require.NoError(t, err)
			}
			assert.Zero(t, rdb.CSCStats().Hits)
		})
	}
}
