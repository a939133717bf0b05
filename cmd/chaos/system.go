package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
)

// system controls the local services and the chatbotd processes of a run.
type system struct {
	o         options
	cluster   string // PostgreSQL's version directory under /etc/postgresql
	diskLimit string // RabbitMQ's disk_free_limit when the run began, in bytes
	// workflow is the URL of an n8n-style workflow in this process that answers every
	// message (startWorkflow): the fixture's webhook chatbot calls it.
	workflow string
}

// startWorkflow serves, on loopback until the process ends, a workflow that answers
// each message with its content: what an n8n "Respond to Webhook" node sends.
func (s *system) startWorkflow() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Content string `json:"content"`
		}
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"reply": "workflow: " + in.Content})
	})}
	go func() { _ = srv.Serve(ln) }()
	s.workflow = "http://" + ln.Addr().String() + "/webhook"
	return nil
}

func newSystem(o options) *system {
	s := &system{o: o}
	if dirs, err := os.ReadDir("/etc/postgresql"); err == nil && len(dirs) > 0 {
		s.cluster = dirs[0].Name()
	}
	return s
}

func sh(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// restore brings every service back: Redis continued (or started), PostgreSQL and
// RabbitMQ started, RabbitMQ's disk limit as it was. It is safe to call at any time.
func (s *system) restore() error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var errs []error
	if pid := redisPID(); pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGCONT)
	}
	if !s.redisUp(ctx) {
		_, err := sh(ctx, "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", "6379", "--save", "", "--appendonly", "no")
		errs = append(errs, err, waitUntil(ctx, time.Minute, func() bool { return s.redisUp(ctx) }, "redis"))
	}
	if !s.postgresUp(ctx) {
		_, err := sh(ctx, "pg_ctlcluster", "--skip-systemctl-redirect", s.cluster, "main", "start")
		errs = append(errs, err, waitUntil(ctx, time.Minute, func() bool { return s.postgresUp(ctx) }, "postgresql"))
	}
	if !s.rabbitUp() {
		errs = append(errs, s.startRabbit(ctx))
	}
	if s.rabbitUp() {
		if s.diskLimit == "" {
			out, err := sh(ctx, "rabbitmqctl", "-q", "eval", "rabbit_disk_monitor:get_disk_free_limit().")
			if v := strings.TrimSpace(out); err == nil && v != "" && v[0] >= '0' && v[0] <= '9' {
				s.diskLimit = v
			}
		} else {
			_, err := sh(ctx, "rabbitmqctl", "-q", "set_disk_free_limit", s.diskLimit)
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// waitUntil polls ok until it holds, naming what did not come within d.
func waitUntil(ctx context.Context, d time.Duration, ok func() bool, what string) error {
	if err := waitFor(ctx, d, func() (bool, error) { return ok(), nil }); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

func redisPID() int {
	out, err := exec.Command("pgrep", "-x", "redis-server").Output()
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.Fields(string(out))[0])
	return pid
}

func (s *system) redisUp(ctx context.Context) bool {
	c := redis.NewClient(&redis.Options{Addr: s.o.redis, DialTimeout: time.Second, ReadTimeout: time.Second, MaxRetries: -1})
	defer c.Close()
	return c.Ping(ctx).Err() == nil
}

func (s *system) postgresUp(ctx context.Context) bool {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, s.o.server)
	if err != nil {
		return false
	}
	defer conn.Close(ctx)
	return conn.Ping(cctx) == nil
}

func (s *system) rabbitUp() bool {
	conn, err := amqp.DialConfig(s.o.amqpURL, amqp.Config{Dial: amqp.DefaultDial(2 * time.Second)})
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

func (s *system) startRabbit(ctx context.Context) error {
	// A node killed with SIGKILL leaves epmd and its pid file behind; rabbitmq-server
	// starts over them.
	if _, err := sh(ctx, "rabbitmq-server", "-detached"); err != nil {
		return err
	}
	return waitUntil(ctx, 2*time.Minute, s.rabbitUp, "rabbitmq")
}

// killRabbit kills the RabbitMQ node with SIGKILL: no clean shutdown, no flush.
func (s *system) killRabbit() error {
	out, err := exec.Command("pgrep", "-f", "beam.smp.*rabbit").Output()
	if err != nil {
		return fmt.Errorf("no RabbitMQ node found: %w", err)
	}
	for _, f := range strings.Fields(string(out)) {
		pid, _ := strconv.Atoi(f)
		if pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	return waitUntil(context.Background(), 30*time.Second, func() bool { return !s.rabbitUp() }, "rabbitmq's death")
}

func (s *system) stopPostgresImmediate(ctx context.Context) error {
	_, err := sh(ctx, "pg_ctlcluster", "--skip-systemctl-redirect", s.cluster, "main", "stop", "-m", "immediate")
	return err
}

func (s *system) startPostgres(ctx context.Context) error {
	if _, err := sh(ctx, "pg_ctlcluster", "--skip-systemctl-redirect", s.cluster, "main", "start"); err != nil {
		return err
	}
	return waitUntil(ctx, time.Minute, func() bool { return s.postgresUp(ctx) }, "postgresql")
}

// pauseRedis stops (SIGSTOP) or continues Redis: stopped, it accepts connections and
// never answers, the worst kind of down for a client, and it keeps its data, so stale
// entries would survive the outage.
func pauseRedis(stop bool) error {
	pid := redisPID()
	if pid == 0 {
		return errors.New("no redis-server process")
	}
	sig := syscall.SIGCONT
	if stop {
		sig = syscall.SIGSTOP
	}
	return syscall.Kill(pid, sig)
}

// names are a scenario's own database, exchange, queues and Redis prefix.
type names struct {
	database, exchange, queuePrefix, redisPrefix string
	// rabbitNodes are the nodes rabbitmqctl asks about the scenario's queues (any live
	// one answers for a cluster); none: the shared node.
	rabbitNodes []string
}

// listQueues is rabbitmqctl's list of the broker's queues with columns.
func listQueues(ctx context.Context, n names, columns ...string) (string, error) {
	args := append([]string{"-q", "list_queues"}, columns...)
	if len(n.rabbitNodes) == 0 {
		return sh(ctx, "rabbitmqctl", args...)
	}
	var err error
	for _, node := range n.rabbitNodes {
		var out string
		if out, err = sh(ctx, "rabbitmqctl", append([]string{"-n", node}, args...)...); err == nil {
			return out, nil
		}
	}
	return "", err
}

func namesFor(scenario string) names {
	return names{database: "chaos_" + strings.ReplaceAll(scenario, "-", "_"), exchange: "chaos." + scenario + ".events",
		queuePrefix: "chaos." + scenario + ".", redisPrefix: "chaos:" + scenario + ":"}
}

// cleanup removes a scenario's queues, exchanges and Redis keys, and its database unless
// kept.
func (s *system) cleanup(n names, dropDatabase bool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if conn, err := amqp.Dial(s.o.amqpURL); err == nil {
		if ch, err := conn.Channel(); err == nil {
			if out, err := sh(ctx, "rabbitmqctl", "-q", "list_queues", "name"); err == nil {
				for _, q := range strings.Fields(out) {
					if strings.HasPrefix(q, n.queuePrefix) {
						_, _ = ch.QueueDelete(q, false, false, false)
					}
				}
			}
			if out, err := sh(ctx, "rabbitmqctl", "-q", "list_exchanges", "name"); err == nil {
				for _, x := range strings.Fields(out) {
					// The event exchange's companions, and the split exchanges of partitioned
					// queues, which are named after the queues.
					if strings.HasPrefix(x, n.exchange) || strings.HasPrefix(x, n.queuePrefix) {
						_ = ch.ExchangeDelete(x, false, false)
					}
				}
			}
			ch.Close()
		}
		conn.Close()
	}
	rdb := redis.NewClient(&redis.Options{Addr: s.o.redis})
	iter := rdb.Scan(ctx, 0, n.redisPrefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		rdb.Del(ctx, iter.Val())
	}
	rdb.Close()
	if dropDatabase {
		if conn, err := pgx.Connect(ctx, s.o.server); err == nil {
			_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{n.database}.Sanitize()+" WITH (FORCE)")
			conn.Close(ctx)
		}
	}
}

// proc is a running chatbotd serve.
type proc struct {
	cmd    *exec.Cmd
	base   string
	addr   string
	exited chan struct{}
	err    error
}

// serveEnv is the environment of a scenario's chatbotd.
func (s *system) serveEnv(dbURL string, n names, addr string, extra ...string) []string {
	env := append(os.Environ(), "DATABASE_URL="+dbURL, "HTTP_ADDR="+addr, "LOG_LEVEL=warn",
		"AMQP_EXCHANGE="+n.exchange, "AMQP_QUEUE_PREFIX="+n.queuePrefix, "REDIS_PREFIX="+n.redisPrefix,
		"REDIS_URL=redis://"+s.o.redis+"/0", "AMQP_URL="+s.o.amqpURL, "METRICS_TOKEN=chaos",
		// The load generator is one client: limits would throttle it, not test chatbotd.
		"RATE_LIMIT_API_PER_MINUTE=100000000", "RATE_LIMIT_PUBLIC_PER_MINUTE=100000000", "JWT_ACCESS_TTL=2h",
		"PASSWORD_HASH_CONCURRENCY=2", "SHUTDOWN_TIMEOUT=5s",
		// The sweep checks the projectors against the log 5 s after the relay (and, for
		// a consumer that may still hold deliveries, 5 s later again): the checks wait for
		// it (swept), so that what it brings back is counted, not missed. At 2 s it took
		// what a consumer slowed by redis-down held for lost, and published it again.
		"PROJECTOR_SWEEP_INTERVAL=5s",
		// The fixture's webhook chatbot calls a workflow on loopback (startWorkflow); a
		// call's longest, which the sweep waits before it takes an unanswered message of
		// the webhook responder's for lost, is then 3 × 2 s, the backoffs and 5 s.
		"ALLOW_PRIVATE_TARGETS=true", "WEBHOOK_TIMEOUT=2s")
	return append(env, extra...)
}

// start starts chatbotd serve and waits until it is ready. Its log goes to logDir.
func (s *system) start(ctx context.Context, env []string, addr, logFile string) (*proc, error) {
	cmd := exec.Command(s.o.binary, "serve")
	cmd.Env = env
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	p := &proc{cmd: cmd, addr: addr, base: "http://" + addr, exited: make(chan struct{})}
	go func() { p.err = cmd.Wait(); f.Close(); close(p.exited) }()
	client := &http.Client{Timeout: 2 * time.Second}
	for i := 0; ; i++ {
		if res, err := client.Get(p.base + "/ready"); err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == 200 {
				return p, nil
			}
		}
		select {
		case <-p.exited:
			return nil, fmt.Errorf("chatbotd exited before it was ready (%v); see %s", p.err, logFile)
		case <-ctx.Done():
			p.kill()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if i > 600 {
			p.kill()
			return nil, fmt.Errorf("chatbotd was not ready within a minute; see %s", logFile)
		}
	}
}

// kill kills the process with SIGKILL and waits for it.
func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// stop asks the process to shut down (SIGINT) and waits for it.
func (p *proc) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		p.kill()
	}
}

func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// freePort returns a local address nobody listens on.
func freePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:18301"
	}
	defer l.Close()
	return l.Addr().String()
}

func logPath(scenario string, i int) string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("chaos-%s-%d.log", scenario, i))
}
