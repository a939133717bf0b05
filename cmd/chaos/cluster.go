package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// rabbitCluster is a RabbitMQ cluster of its own, started on this machine beside the
// shared node: each node has its own name (chaos<i>@localhost), AMQP and distribution
// ports and data directory, no plugins (the shared node's management port stays its
// own), and runs as the rabbitmq user with the shared node's Erlang cookie. stop tears it
// down and leaves the shared node as it was.
type rabbitCluster struct {
	dir   string
	nodes []rabbitNode
}

type rabbitNode struct {
	name string // for rabbitmqctl -n
	port int    // AMQP
	dir  string
}

const clusterBasePort = 5691

func startRabbitCluster(ctx context.Context, size int) (*rabbitCluster, error) {
	dir, err := os.MkdirTemp("", "chatbotd-chaos-rabbit-")
	if err != nil {
		return nil, err
	}
	c := &rabbitCluster{dir: dir}
	for i := range size {
		n := rabbitNode{name: fmt.Sprintf("chaos%d@localhost", i+1), port: clusterBasePort + i,
			dir: filepath.Join(dir, strconv.Itoa(i+1))}
		for _, sub := range []string{"mnesia", "log"} {
			if err := os.MkdirAll(filepath.Join(n.dir, sub), 0o755); err != nil {
				return nil, err
			}
		}
		conf := fmt.Sprintf("listeners.tcp.local = 127.0.0.1:%d\n", n.port)
		if err := errors.Join(os.WriteFile(filepath.Join(n.dir, "rabbitmq.conf"), []byte(conf), 0o644),
			os.WriteFile(filepath.Join(n.dir, "plugins"), []byte("[].\n"), 0o644)); err != nil {
			return nil, err
		}
		c.nodes = append(c.nodes, n)
	}
	if out, err := exec.Command("chown", "-R", "rabbitmq:rabbitmq", dir).CombinedOutput(); err != nil {
		c.stop(false)
		return nil, fmt.Errorf("chown %s: %v: %s", dir, err, out)
	}
	errs := make(chan error, size)
	for i := range c.nodes {
		go func() { errs <- c.start(ctx, i) }()
	}
	for range size {
		if err := <-errs; err != nil {
			c.stop(true) // the error names a node's log
			return nil, err
		}
	}
	for _, n := range c.nodes[1:] {
		for _, args := range [][]string{{"stop_app"}, {"join_cluster", c.nodes[0].name}, {"start_app"}} {
			if _, err := c.ctl(ctx, n, args...); err != nil {
				c.stop(true)
				return nil, err
			}
		}
	}
	return c, nil
}

func (c *rabbitCluster) ctl(ctx context.Context, n rabbitNode, args ...string) (string, error) {
	return sh(ctx, "rabbitmqctl", append([]string{"-q", "-n", n.name}, args...)...)
}

// start starts node i (again: a node restarted with its data directory rejoins) and waits
// until it runs.
func (c *rabbitCluster) start(ctx context.Context, i int) error {
	n := c.nodes[i]
	cmd := exec.CommandContext(ctx, "rabbitmq-server", "-detached")
	cmd.Env = append(os.Environ(), "RABBITMQ_NODENAME="+n.name, "RABBITMQ_NODE_PORT="+strconv.Itoa(n.port),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(n.port+20000), "RABBITMQ_MNESIA_BASE="+filepath.Join(n.dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(n.dir, "log"), "RABBITMQ_PID_FILE="+filepath.Join(n.dir, "pid"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(n.dir, "plugins"),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(n.dir, "rabbitmq.conf"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("start %s: %v: %s", n.name, err, out)
	}
	// -detached returns before the node has registered with epmd, and await_startup
	// gives up at once on a node that is not there yet.
	if err := waitUntil(ctx, 90*time.Second, func() bool {
		_, err := c.ctl(ctx, n, "ping")
		return err == nil
	}, n.name+" answering"); err != nil {
		return fmt.Errorf("%w (its log: %s)", err, filepath.Join(n.dir, "log"))
	}
	if _, err := c.ctl(ctx, n, "await_startup", "--timeout", "120"); err != nil {
		return err
	}
	return waitUntil(ctx, time.Minute, func() bool { return c.up(i) }, n.name+" taking connections")
}

func (c *rabbitCluster) up(i int) bool {
	conn, err := amqp.DialConfig(c.url(i), amqp.Config{Dial: amqp.DefaultDial(2 * time.Second)})
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

func (c *rabbitCluster) url(i int) string {
	return fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", c.nodes[i].port)
}

// urls is AMQP_URL for the cluster.
func (c *rabbitCluster) urls() string {
	var out []string
	for i := range c.nodes {
		out = append(out, c.url(i))
	}
	return strings.Join(out, ",")
}

// nodeNames are the nodes, for rabbitmqctl -n (any live one answers for the cluster).
func (c *rabbitCluster) nodeNames() []string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, n.name)
	}
	return out
}

// kill SIGKILLs node i: no clean shutdown, no flush.
func (c *rabbitCluster) kill(i int) error {
	raw, err := os.ReadFile(filepath.Join(c.nodes[i].dir, "pid"))
	if err != nil {
		return err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || pid <= 0 {
		return fmt.Errorf("pid file of %s: %q", c.nodes[i].name, raw)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	return waitUntil(context.Background(), 30*time.Second, func() bool { return !c.up(i) }, c.nodes[i].name+"'s death")
}

// serving is the node that carries the most client connections (each chatbotd process
// has one, for its relay and every consumer).
func (c *rabbitCluster) serving(ctx context.Context) (int, error) {
	for i, n := range c.nodes {
		if !c.up(i) {
			continue
		}
		out, err := c.ctl(ctx, n, "list_connections", "port")
		if err != nil {
			continue
		}
		count := map[int]int{}
		for _, f := range strings.Fields(out) {
			if p, err := strconv.Atoi(f); err == nil {
				count[p]++
			}
		}
		best, most := -1, 0
		for j, m := range c.nodes {
			if count[m.port] > most {
				best, most = j, count[m.port]
			}
		}
		if best < 0 {
			return 0, errors.New("no client connection on any node")
		}
		return best, nil
	}
	return 0, errors.New("no node answers")
}

// stop stops every node and removes the cluster's directory, unless keep: a scenario
// that failed keeps it (the nodes' logs and data), with queues.txt written first.
func (c *rabbitCluster) stop(keep bool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if keep {
		c.saveQueues(ctx)
	}
	for i, n := range c.nodes {
		if _, err := c.ctl(ctx, n, "stop"); err != nil {
			_ = c.kill(i)
		}
	}
	if keep {
		fmt.Fprintf(os.Stderr, "kept the RabbitMQ cluster's directory %s (each node's log/, mnesia/, and queues.txt)\n", c.dir)
		return
	}
	_ = os.RemoveAll(c.dir)
}

// saveQueues writes, as the first live node sees them (the queues are the cluster's),
// the queues' counts and each queue's Raft state (quorum_status) into queues.txt in the
// cluster's directory: what the broker did with their messages.
func (c *rabbitCluster) saveQueues(ctx context.Context) {
	i := 0
	for i < len(c.nodes) && !c.up(i) {
		i++
	}
	if i == len(c.nodes) {
		return
	}
	n := c.nodes[i]
	var b strings.Builder
	out, err := c.ctl(ctx, n, "list_queues", "name", "leader", "online", "messages", "messages_ready",
		"messages_unacknowledged", "consumers")
	fmt.Fprintf(&b, "== list_queues on %s (%v)\n%s\n", n.name, err, out)
	for _, line := range strings.Split(out, "\n") {
		if q, _, ok := strings.Cut(line, "\t"); ok && q != "name" && !strings.HasSuffix(q, ".dead") {
			status, err := sh(ctx, "rabbitmq-queues", "-q", "-n", n.name, "--formatter", "json", "quorum_status", q)
			fmt.Fprintf(&b, "== quorum_status %s (%v)\n%s\n", q, err, status)
		}
	}
	_ = os.WriteFile(filepath.Join(c.dir, "queues.txt"), []byte(b.String()), 0o644)
}
