package cache_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/cache"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// redisProc is a redis-server (or sentinel) of the test's own, on a loopback port.
type redisProc struct {
	port int
	cmd  *exec.Cmd
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startRedis runs redis-server with conf (plus its port) in a directory of its own until
// the test ends; sentinel runs it as a Sentinel.
func startRedis(t *testing.T, conf string, sentinel bool) *redisProc {
	t.Helper()
	p := &redisProc{port: freePort(t)}
	dir := t.TempDir()
	file := filepath.Join(dir, "redis.conf")
	require.NoError(t, os.WriteFile(file, []byte(fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsave \"\"\nappendonly no\n%s",
		p.port, dir, conf)), 0o644))
	args := []string{file}
	if sentinel {
		args = append(args, "--sentinel")
	}
	p.cmd = exec.Command("redis-server", args...)
	require.NoError(t, p.cmd.Start())
	t.Cleanup(func() { _ = p.cmd.Process.Kill(); _ = p.cmd.Wait() })
	c := redis.NewClient(&redis.Options{Addr: p.addr()})
	defer c.Close()
	testenv.Eventually(t, 10*time.Second, func() error { return c.Ping(context.Background()).Err() })
	return p
}

func (p *redisProc) addr() string { return "127.0.0.1:" + strconv.Itoa(p.port) }

// A master acknowledges a newer entry and dies before its replica has it; Sentinel
// promotes the replica, which holds the older entry. The cache follows the new master
// and never serves that older entry: it is a miss, filled again from the read model.
// (Without the epoch the old entry was served as current until its TTL.)
func TestAFailoverNeverServesAnEntryTheOldMasterReplaced(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server is not installed")
	}
	ctx := context.Background()
	// The replica follows the master as a user of its own, which the test then turns off:
	// what the master acknowledges after that never reaches the replica (a proxy would
	// not do: Sentinel points a replica whose master address differs back at the master).
	master := startRedis(t, "user replicator on >secret ~* &* +@all\n", false)
	replica := startRedis(t, "replicaof 127.0.0.1 "+strconv.Itoa(master.port)+"\nmasteruser replicator\nmasterauth secret\n", false)
	sentinel := startRedis(t, fmt.Sprintf("sentinel monitor chatbotd 127.0.0.1 %d 1\nsentinel down-after-milliseconds chatbotd 300\n"+
		"sentinel failover-timeout chatbotd 3000\n", master.port), true)
	direct := redis.NewClient(&redis.Options{Addr: master.addr()})
	defer direct.Close()
	testenv.Eventually(t, 10*time.Second, func() error { // the replica is in sync
		info := direct.Info(ctx, "replication").Val()
		if !strings.Contains(info, "state=online") {
			return fmt.Errorf("replica not online yet")
		}
		return nil
	})

	rdb, epoch, err := cache.Open("redis-sentinel://"+sentinel.addr()+"/0?master_name=chatbotd", cache.Local{})
	require.NoError(t, err)
	defer rdb.Close()
	c := cache.New(rdb, "failover:", time.Hour)
	c.FollowMasters(epoch)
	key := c.Key("user", "1")
	require.NoError(t, c.Set(ctx, key, cache.Entry{Version: 1, Payload: []byte("old name")}))
	onReplica := redis.NewClient(&redis.Options{Addr: replica.addr()})
	defer onReplica.Close()
	// Read on the replica itself: WAIT counts only the writes of the client that sends it,
	// and direct wrote nothing, so it answered at once, before the cache's write had
	// reached a busy machine's replica.
	testenv.Eventually(t, 10*time.Second, func() error {
		if v := onReplica.HGet(ctx, key, "v").Val(); v != "1" {
			return fmt.Errorf("the replica has version %q, not 1 yet", v)
		}
		return nil
	})

	// The replica's link breaks; the master acknowledges version 2, then dies.
	require.NoError(t, direct.Do(ctx, "ACL", "SETUSER", "replicator", "off").Err())
	require.NoError(t, direct.Do(ctx, "CLIENT", "KILL", "USER", "replicator").Err())
	require.NoError(t, c.Set(ctx, key, cache.Entry{Version: 2, Payload: []byte("new name")}))
	got, err := c.Get(ctx, key)
	require.NoError(t, err)
	require.Equal(t, 2, got.Version)
	require.NoError(t, master.cmd.Process.Kill())

	// Sentinel promotes the replica; the client follows it.
	testenv.Eventually(t, 30*time.Second, func() error {
		addr, err := redis.NewSentinelClient(&redis.Options{Addr: sentinel.addr()}).GetMasterAddrByName(ctx, "chatbotd").Result()
		if err != nil || addr[1] != strconv.Itoa(replica.port) {
			return fmt.Errorf("master is still %v (%v)", addr, err)
		}
		return rdb.Ping(ctx).Err()
	})
	assert.Equal(t, "1", onReplica.HGet(ctx, key, "v").Val(), "the promoted replica holds the older entry")
	testenv.Eventually(t, 10*time.Second, func() error {
		_, err := c.Get(ctx, key)
		if err == nil {
			return fmt.Errorf("an entry of the old master's time was served")
		}
		if err != cache.ErrMiss {
			return err // the client is still switching
		}
		return nil
	})
	// Filled again (a projector's write, or a reader's fill), it is served.
	require.NoError(t, c.Set(ctx, key, cache.Entry{Version: 1, Payload: []byte("old name")}))
	got, err = c.Get(ctx, key)
	require.NoError(t, err)
	assert.Equal(t, 1, got.Version, "an entry written under the new master is served")
}

// REDIS_URL may name a Redis Cluster: the cache's reads, its script and its pipelines of
// many keys (each key in its own hash slot, on three masters) work through it.
func TestTheCacheWorksOnARedisCluster(t *testing.T) {
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Skip("redis-cli is not installed")
	}
	ctx := context.Background()
	var nodes []string
	for range 3 {
		nodes = append(nodes, startRedis(t, "cluster-enabled yes\ncluster-node-timeout 2000\n", false).addr())
	}
	out, err := exec.Command("redis-cli", append(append([]string{"--cluster", "create"}, nodes...),
		"--cluster-replicas", "0", "--cluster-yes")...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	rdb, epoch, err := cache.Open("redis-cluster://"+nodes[0]+"?addr="+nodes[1]+"&addr="+nodes[2], cache.Local{})
	require.NoError(t, err)
	defer rdb.Close()
	assert.Nil(t, epoch, "a cluster has a master per shard: no one epoch")
	c := cache.New(rdb, "cluster:", time.Hour)
	testenv.Eventually(t, 20*time.Second, func() error { // the slots are being assigned
		return c.Set(ctx, c.Key("user", "probe"), cache.Entry{Version: 1, Payload: []byte("x")})
	})
	var keys []string
	var entries []cache.Entry
	for i := range 50 {
		keys = append(keys, c.Key("user", strconv.Itoa(i)))
		entries = append(entries, cache.Entry{Version: 2, Payload: []byte("v2-" + strconv.Itoa(i))})
	}
	require.NoError(t, c.SetMany(ctx, keys, entries))
	require.NoError(t, c.Set(ctx, keys[7], cache.Entry{Version: 1, Payload: []byte("older")}))
	for i, k := range keys {
		got, err := c.Get(ctx, k)
		require.NoError(t, err, k)
		assert.Equal(t, entries[i], got, "the newest version of %s, on whichever master holds it", k)
	}
}
