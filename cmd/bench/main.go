// Command bench measures chatbotd against baselines run in the same invocation on the same
// machine, and writes the tables into BENCHMARKS.md (between its generated markers).
//
//	go run ./cmd/bench -binary bin/chatbotd -out BENCHMARKS.md
//
// Figures are ratios against the baseline because absolute numbers drift between runs.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/broker"
	"github.com/chatbotsaas/chatbotd/internal/db"
	"github.com/chatbotsaas/chatbotd/internal/measure"
)

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type options struct {
	server    string
	database  string
	binary    string
	out       string
	amqpURL   string
	redisAddr string
	duration  time.Duration
	samples   int
	quick     bool
	// Sizes, smaller with -quick.
	writers         []int
	pipelineEvents  int
	watermillEvents int
	knowledge       []int
	replySamples    int
	// conversations of 100 events in the audit part's log (a million events in all)
	historyConversations int
	// partitionRuns, when set, picks some of the partitioned projectors' runs ("4x2,1x1":
	// partitions x processes)
	partitionRuns string
}

func run(ctx context.Context) error {
	var o options
	flag.StringVar(&o.server, "postgres", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "PostgreSQL server (its postgres database)")
	flag.StringVar(&o.database, "database", "chatbotd_bench", "database to (re)create for the run")
	flag.StringVar(&o.binary, "binary", "bin/chatbotd-bench", "chatbotd built with -tags benchnoauth, for the end-to-end figures")
	flag.StringVar(&o.out, "out", "", "markdown file to write the results into (stdout when empty)")
	flag.StringVar(&o.amqpURL, "amqp", "amqp://guest:guest@127.0.0.1:5672/", "RabbitMQ")
	flag.StringVar(&o.redisAddr, "redis", "127.0.0.1:6379", "Redis (host:port)")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "duration of each throughput measurement")
	flag.IntVar(&o.samples, "samples", 100, "messages timed for the reply latency figure")
	flag.BoolVar(&o.quick, "quick", false, "a one-minute subset at smaller sizes (printed, not written)")
	auditOnly := flag.Bool("audit-only", false, "only the chain, rebuild and verify figures (printed, not written)")
	integrationsOnly := flag.Bool("integrations-only", false, "only the analytics and webhook figures (printed, not written)")
	webhooksOnly := flag.Bool("webhooks-only", false, "only the webhook deliverer against a bare client (printed, not written)")
	appendsOnly := flag.Bool("appends-only", false, "only the event store appends against pgbench (printed, not written)")
	pipelineOnly := flag.Bool("pipeline-only", false, "only the relay and projector figures (printed, not written)")
	partitionsOnly := flag.Bool("partitions-only", false, "only the partitioned projectors' figures (printed, not written)")
	flag.StringVar(&o.partitionRuns, "partition-runs", "", "with -partitions-only: the runs to make, as partitions x processes (\"4x2,1x1\"); all when empty")
	conversationsOnly := flag.Bool("conversations-only", false, "only the knowledge-base responder figures (printed, not written)")
	bombardOnly := flag.Bool("bombard-only", false, "only the whole binary and the floor against the bare handler, driven by bombardier (printed, not written)")
	peerOnly := flag.Bool("peer-only", false, "only the whole binary against watermill's documented pipeline (printed, not written)")
	httpOnly := flag.Bool("http-only", false, "only the commands, read model and cached read figures over HTTP (printed, not written; no pgbench ratio)")
	framesOnly := flag.Bool("frames-only", false, "only RabbitMQ's CPU per event with one event a message and with a relay batch a message (printed, not written)")
	readRate := flag.Float64("read-rate", 0, "only the 2xx → read model figure, at this many commands/s for twice -duration after a warm-up (printed, not written)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of this process (the in-process relay, projector and appends) to this file")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	o.writers, o.pipelineEvents, o.watermillEvents, o.knowledge, o.replySamples = []int{1, 8, 32}, 100_000, 5_000, []int{1000, 10000}, o.samples
	o.historyConversations = 10_000
	if o.quick {
		o.writers, o.pipelineEvents, o.watermillEvents, o.knowledge, o.replySamples = []int{32}, 20_000, 2_000, []int{1000}, 50
		o.historyConversations = 1_000 // only with -audit-only: the quick run leaves the audit part out
		o.out = ""
	}
	if *integrationsOnly || *webhooksOnly {
		figures := integrationFigures
		if *webhooksOnly {
			figures = webhookOnlyFigures
		}
		var report strings.Builder
		if err := figures(ctx, o, &report); err != nil {
			return err
		}
		fmt.Print(report.String())
		return nil
	}
	if *auditOnly {
		var report strings.Builder
		if err := auditFigures(ctx, o, &report); err != nil {
			return err
		}
		fmt.Print(report.String())
		return nil
	}
	if *pipelineOnly {
		return pipelineFigures(ctx, o, os.Stdout)
	}
	if *partitionsOnly {
		return partitionFigures(ctx, o, os.Stdout)
	}
	if *readRate > 0 {
		return readModelAt(ctx, o, *readRate)
	}
	if *framesOnly {
		return framesFigures(o, os.Stdout)
	}

	pool, dbURL, err := freshDatabase(ctx, o, "")
	if err != nil {
		return err
	}
	defer pool.Close()

	began := time.Now()
	var report strings.Builder
	fmt.Fprintf(&report, "Run on %s: %s, %d cores, %s; %s; PostgreSQL %s.\n\n",
		time.Now().UTC().Format("2006-01-02"), measure.CPUModel(), runtime.NumCPU(), measure.MemTotal(), runtime.Version(), pgVersion(ctx, pool))
	command := fmt.Sprintf("`make bench` (`go run ./cmd/bench -binary bin/chatbotd-bench -duration %s -samples %d`)", o.duration, o.samples)
	if o.quick {
		command = fmt.Sprintf("`make bench-quick` (`go run ./cmd/bench -quick -binary bin/chatbotd-bench -duration %s`)", o.duration)
	}
	fmt.Fprintf(&report, "Command: %s.\n\n", command)

	if *appendsOnly {
		_, err := appendFigures(ctx, pool, dbURL, o, os.Stdout)
		return err
	}
	// 1. Appends against pgbench.
	var pgbench32 float64
	if !*httpOnly && !*conversationsOnly && !*peerOnly && !*bombardOnly {
		if pgbench32, err = appendFigures(ctx, pool, dbURL, o, &report); err != nil {
			return err
		}
		// 2. The relay and a projector against their baselines.
		if err := pipelineFigures(ctx, o, &report); err != nil {
			return err
		}
		if !o.quick {
			if err := partitionFigures(ctx, o, &report); err != nil {
				return err
			}
		}
	}
	// 3. The command side alone (`serve --roles api`), before the whole binary starts,
	// so that nothing else runs on the cores.
	pool.Reset()
	var alone commandSide
	if !*conversationsOnly && !*peerOnly && !*bombardOnly {
		if alone, err = commandsAlone(ctx, o); err != nil {
			return err
		}
	}
	// 4. The whole binary over HTTP, on a database of its own (the phases above left
	// backlogs the relay would otherwise publish first).
	e2eURL, err := db.Recreate(ctx, o.server, o.database+"_e2e")
	if err != nil {
		return err
	}
	srv, err := startServer(ctx, o, e2eURL, "")
	if err != nil {
		return err
	}
	defer srv.stop()
	// PostgreSQL's 100 connections are shared by the server (its pool of 32 and its
	// dedicated LISTEN connections), the bare service and this process: the appends'
	// idle connections were closed above, and the bare service's pool matches its 32
	// clients.
	e2ePool, err := db.Open(ctx, e2eURL, 34)
	if err != nil {
		return err
	}
	defer e2ePool.Close()
	if *bombardOnly {
		rdb := redis.NewClient(&redis.Options{Addr: o.redisAddr, PoolSize: 64})
		defer rdb.Close()
		b, err := startBare(ctx, e2ePool, rdb)
		if err != nil {
			return err
		}
		defer b.stop()
		if err := outOfProcess(ctx, o, srv, b, 2, &report); err != nil {
			return err
		}
		fmt.Print(report.String())
		return nil
	}
	if *peerOnly {
		if err := peerFigures(ctx, o, srv, e2ePool, &report); err != nil {
			return err
		}
		fmt.Print(report.String())
		return nil
	}
	if !*conversationsOnly {
		if err := httpFigures(ctx, o, srv, e2ePool, pgbench32, alone, &report); err != nil {
			return err
		}
	}
	if *httpOnly {
		fmt.Print(report.String())
		return nil
	}

	// 5. Conversations: the knowledge-base responder.
	report.WriteString("\n### Conversations answered by the knowledge-base responder\n\n")
	report.WriteString("A published chatbot whose trained knowledge base holds the given number of entries; 8 clients post 300 questions " +
		"that each match one entry, and the rate is replies per second from the first post to the last `message.replied` in the log. " +
		"The latency is one message at a time, from the 202 of `POST /conversations/{id}/messages` to the reply being readable " +
		"through `GET /conversations/{id}/messages` (polled every 2 ms; back to back until issue 8's fourth pass). The goal is p99 < 150 ms at 1,000 entries.\n\n")
	report.WriteString("| entries | replies/s | samples | p50 202 → reply readable | p99 |\n|---:|---:|---:|---:|---:|\n")
	for _, n := range o.knowledge {
		bot, err := srv.chatbotWithKnowledge(n)
		if err != nil {
			return err
		}
		conv, err := srv.conversation(bot)
		if err != nil {
			return err
		}
		rate, err := srv.answerRate(e2ePool, conv, 300)
		if err != nil {
			return err
		}
		lconv, err := srv.conversation(bot)
		if err != nil {
			return err
		}
		p50, p99, err := srv.replyLatency(lconv, o.replySamples)
		if err != nil {
			return err
		}
		fmt.Fprintf(&report, "| %d | %.0f | %d | %s | %s |\n", n, rate, o.replySamples, ms(p50), ms(p99))
		fmt.Fprintf(os.Stderr, "responder, %d entries: %.0f replies/s, p50 %s p99 %s\n", n, rate, ms(p50), ms(p99))
	}
	if *conversationsOnly {
		fmt.Print(report.String())
		return nil
	}
	if _, peak, err := residentMB(srv.pid); err == nil {
		fmt.Fprintf(&report, "\nResident memory peak of `chatbotd serve` after these conversations too: %.0f MiB.\n", peak)
	}
	if o.quick {
		srv.stop()
		fmt.Fprintf(&report, "\nThe quick run took %s.\n", time.Since(began).Round(time.Second))
		fmt.Print(report.String())
		return nil
	}
	bot, err := srv.chatbotWithKnowledge(10)
	if err != nil {
		return err
	}
	conv, err := srv.conversation(bot)
	if err != nil {
		return err
	}
	first, last, err := srv.postCost(conv, 3000)
	if err != nil {
		return err
	}
	report.WriteString("\nPosting into a long conversation: 3,000 messages posted one after another into one conversation " +
		"(each is a stream of its own, so nothing grows with the conversation).\n\n")
	fmt.Fprintf(&report, "| p50 POST, messages 1-200 | p50 POST, messages 2,801-3,000 | ratio |\n|---:|---:|---:|\n| %s | %s | %.2f× |\n",
		ms(first), ms(last), float64(last)/float64(first))
	fmt.Fprintf(os.Stderr, "posting: first %s, last %s\n", ms(first), ms(last))

	// 6. Exporting the audit trail through the API, a million entries.
	const exported = 300_000
	if err := seedAuditEntries(ctx, e2ePool, srv.org, exported); err != nil {
		return err
	}
	report.WriteString("\n### Audit export\n\n")
	fmt.Fprintf(&report, "`GET /api/v1/audit-logs/export` of an organization with %d audit entries, through the whole binary, "+
		"read by one client as it streams; the rate is entries per second from the request to the last byte.\n\n", exported)
	copyOut, err := copyOutRate(ctx, e2ePool, srv.org)
	if err != nil {
		return err
	}
	report.WriteString("The baseline is PostgreSQL's own `COPY (SELECT … ORDER BY …) TO STDOUT` of the same entries as CSV, in the same run.\n\n")
	report.WriteString("| format | entries/s | MiB | ratio to COPY TO |\n|---|---:|---:|---:|\n")
	fmt.Fprintf(&report, "| COPY TO, csv (baseline) | %.0f | | 1.00× |\n", copyOut)
	for _, format := range []string{"ndjson", "csv"} {
		rate, size, err := srv.exportRate(e2ePool, exported, format)
		if err != nil {
			return err
		}
		fmt.Fprintf(&report, "| %s | %.0f | %.0f | %.2f× |\n", format, rate, float64(size)/(1<<20), rate/copyOut)
		fmt.Fprintf(os.Stderr, "export %s: %.0f entries/s, %d bytes (COPY TO %.0f/s)\n", format, rate, size, copyOut)
	}
	srv.stop()

	// 7. Chain, rebuild and verify over a million events.
	if err := auditFigures(ctx, o, &report); err != nil {
		return err
	}
	// 8. Analytics projector and webhook deliveries.
	if err := integrationFigures(ctx, o, &report); err != nil {
		return err
	}
	fmt.Fprintf(&report, "\nThe whole run took %s.\n", time.Since(began).Round(time.Second))
	fmt.Fprintf(os.Stderr, "bench: done in %s\n", time.Since(began).Round(time.Second))

	if o.out == "" {
		fmt.Print(report.String())
		return nil
	}
	return writeBetweenMarkers(o.out, report.String())
}

// freshDatabase (re)creates the run's database with suffix and opens it migrated; it
// returns the pool and the database's URL (for pgbench).
func freshDatabase(ctx context.Context, o options, suffix string) (*pgxpool.Pool, string, error) {
	url, err := db.Recreate(ctx, o.server, o.database+suffix)
	if err != nil {
		return nil, "", err
	}
	pool, err := openMigrated(ctx, url)
	return pool, url, err
}

func openMigrated(ctx context.Context, url string) (*pgxpool.Pool, error) {
	pool, err := db.Open(ctx, url, 40)
	if err != nil {
		return nil, err
	}
	if err := db.Migrate(ctx, pool, slog.New(slog.DiscardHandler)); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

// appendFigures measures appends per second at 1, 8 and 32 writers against pgbench
// inserting the same row, one row per transaction, in the same run.
func appendFigures(ctx context.Context, pool *pgxpool.Pool, dbURL string, o options, w io.Writer) (pgbench32 float64, err error) {
	fmt.Fprint(w, "### Event store appends (durable; concurrent commands share a commit)\n\n")
	fmt.Fprint(w, "Each append is what a command does in the store: check the expected version and insert the event, commit (fsync), then wake the relay (a coalesced NOTIFY outside the transaction). "+
		"An append alone is one statement; appends that arrive while others are in flight are committed together (group commit: one version read, one INSERT, one commit for the group, each append keeping its own check and result). ")
	fmt.Fprint(w, "The baseline is pgbench, in the same run, inserting the same row into the same `events` table, one row per transaction.\n\n")
	fmt.Fprint(w, "| writers | chatbotd appends/s | without group commit | pgbench inserts/s | ratio | ratio without |\n|---:|---:|---:|---:|---:|---:|\n")
	store := eventstore.NewStore(pool)
	defer store.Close()
	single := eventstore.NewStore(pool)
	single.DisableGroupCommit()
	defer single.Close()
	for _, n := range o.writers {
		ours, err := appendRate(ctx, store, n, o.duration)
		if err != nil {
			return 0, err
		}
		alone, err := appendRate(ctx, single, n, o.duration)
		if err != nil {
			return 0, err
		}
		base, err := pgbenchRate(ctx, dbURL, n, o.duration)
		if err != nil {
			return 0, err
		}
		if n == 32 {
			pgbench32 = base
		}
		fmt.Fprintf(w, "| %d | %.0f | %.0f | %.0f | %.2f× | %.2f× |\n", n, ours, alone, base, ours/base, alone/base)
		fmt.Fprintf(os.Stderr, "appends: %d writers: %.0f/s (alone %.0f/s) vs pgbench %.0f/s\n", n, ours, alone, base)
	}
	return pgbench32, nil
}

func appendRate(ctx context.Context, store *eventstore.Store, writers int, d time.Duration) (float64, error) {
	var n atomic.Int64
	var firstErr error
	var once sync.Once
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	org := uuid.New()
	start := time.Now()
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				_, err := store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamUser, StreamID: uuid.New(),
					ExpectedVersion: 0, OrganizationID: &org, Meta: events.Meta{Actor: events.Actor{Type: events.ActorSystem}},
					Events: []events.Event{events.UserCreated{Name: "Bench User", Email: "bench@example.com", Roles: []string{"member"}, Status: "active"}}})
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return float64(n.Load()) / time.Since(start).Seconds(), firstErr
}

const pgbenchScript = `INSERT INTO events (id, stream_type, stream_id, stream_version, type, schema_version, organization_id,
  actor_type, data, occurred_at) VALUES (gen_random_uuid(), 'user', gen_random_uuid(), 1, 'user.created', 1,
  gen_random_uuid(), 'system', '{"name":"Bench User","email":"bench@example.com","roles":["member"],"status":"active"}', now());
`

var tpsLine = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

func pgbenchRate(ctx context.Context, dbURL string, clients int, d time.Duration) (float64, error) {
	return pgbench(ctx, dbURL, pgbenchScript, clients, d)
}

// pgbench runs script from clients for d and returns transactions per second.
func pgbench(ctx context.Context, dbURL, script string, clients int, d time.Duration) (float64, error) {
	f, err := os.CreateTemp("", "pgbench-*.sql")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(script); err != nil {
		return 0, err
	}
	f.Close()
	return toolRate(ctx, tpsLine, "pgbench", "-n", "-M", "prepared", "-c", strconv.Itoa(clients),
		"-j", strconv.Itoa(min(clients, runtime.NumCPU())), "-T", strconv.Itoa(int(d.Seconds())), "-f", f.Name(), dbURL)
}

// toolRate runs a baseline tool and reads the rate it prints (the first group of re).
func toolRate(ctx context.Context, re *regexp.Regexp, name string, args ...string) (float64, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%s: %v: %s", name, err, out)
	}
	m := re.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("%s: no rate in %s", name, out)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

// server is a running chatbotd (the bench build) with a logged-in owner.
type server struct {
	base   string
	client *http.Client
	token  string
	org    string
	user   string // the owner's id
	pid    int
	pprof  string // base URL of its PPROF_ADDR
	ctx    context.Context
	stop   func()
}

// startServer starts chatbotd serve on dbURL with roles ("" for every role), waits until
// it is ready, and registers and logs in an owner.
func startServer(ctx context.Context, o options, dbURL, roles string) (*server, error) {
	const addr, pprofAddr = "127.0.0.1:18097", "127.0.0.1:18098"
	// Each server the bench starts serves a fresh database on the same queue names, after
	// the one before it stopped: the names' claim by the old store is let go (what the
	// old store left in the queues is skipped by its store id).
	if err := releaseClaim(o.amqpURL, "bench.serve."); err != nil {
		return nil, err
	}
	args := []string{"serve"}
	if roles != "" {
		args = append(args, "--roles", roles)
	}
	// Its log (warnings and failed requests) is kept beside the binary, for when a figure
	// fails or looks wrong.
	logPath := o.binary + ".log"
	ctx, cancel := context.WithCancel(ctx)
	stop, pid, err := spawn(ctx, o, args, []string{"DATABASE_URL=" + dbURL, "HTTP_ADDR=" + addr, "LOG_LEVEL=warn",
		"AMQP_EXCHANGE=bench.serve.events", "AMQP_QUEUE_PREFIX=bench.serve.", "REDIS_PREFIX=bench:", "PPROF_ADDR=" + pprofAddr,
		// The limits would throttle the load generator, not measure chatbotd.
		"RATE_LIMIT_API_PER_MINUTE=100000000", "RATE_LIMIT_PUBLIC_PER_MINUTE=100000000"}, logPath)
	if err != nil {
		cancel()
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "chatbotd serve logs to %s\n", logPath)
	s := &server{base: "http://" + addr, pprof: "http://" + pprofAddr, pid: pid, ctx: ctx, stop: func() { cancel(); stop() },
		// At most 256 connections, as a client's pool would have: an open loop's request
		// that finds them all busy waits for one, its latency counted from when it was due.
		// Without the bound, a loop that fell behind dialed a connection per late request,
		// whose setup put the server further behind, until the bench ran out of file
		// descriptors (BENCHMARKS.md, issue 23's ninth pass).
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}}}
	for i := 0; ; i++ {
		if res, err := s.client.Get(s.base + "/ready"); err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		if i > 300 {
			s.stop()
			return nil, errors.New("chatbotd did not become ready")
		}
		time.Sleep(100 * time.Millisecond)
	}
	email := "owner-" + uuid.NewString()[:8] + "@bench.example"
	st, env, err := s.call("POST", "/api/v1/auth/register", "", map[string]string{"organization_name": "Bench", "name": "Owner", "email": email, "password": "bench-password"})
	if err != nil || st != 201 {
		s.stop()
		return nil, fmt.Errorf("register: %d %v %v", st, env, err)
	}
	s.org = env["data"].(map[string]any)["organization"].(map[string]any)["id"].(string)
	s.user = env["data"].(map[string]any)["user"].(map[string]any)["id"].(string)
	st, env, err = s.call("POST", "/api/v1/auth/login", "", map[string]string{"email": email, "password": "bench-password"})
	if err != nil || st != 200 {
		s.stop()
		return nil, fmt.Errorf("login: %d %v %v", st, env, err)
	}
	s.token = env["data"].(map[string]any)["access_token"].(string)
	return s, nil
}

// spawn starts the chatbotd binary with args and env (added to this process's), its
// output to logPath; stop stops it (SIGINT, then a clean shutdown) and waits.
func spawn(ctx context.Context, o options, args, env []string, logPath string) (stop func(), pid int, err error) {
	ctx, cancel := context.WithCancel(ctx)
	cmd := exec.CommandContext(ctx, o.binary, args...)
	cmd.Env = append(os.Environ(), env...)
	logFile, err := os.Create(logPath)
	if err != nil {
		cancel()
		return nil, 0, err
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	if err := cmd.Start(); err != nil {
		cancel()
		logFile.Close()
		return nil, 0, fmt.Errorf("start %s (make bench builds it): %w", o.binary, err)
	}
	return func() { cancel(); _ = cmd.Wait(); logFile.Close() }, cmd.Process.Pid, nil
}

func (s *server) call(method, path, token string, body any) (int, map[string]any, error) {
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequestWithContext(s.ctx, method, s.base+path, r)
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := s.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	var env map[string]any
	_ = json.NewDecoder(res.Body).Decode(&env)
	return res.StatusCode, env, nil
}

func (s *server) createUser(i int) (string, error) {
	st, env, err := s.call("POST", "/api/v1/users", s.token, map[string]string{"name": "User", "email": fmt.Sprintf("u%d-%s@bench.example", i, uuid.NewString()[:6]),
		"password": "password1", "password_confirmation": "password1"})
	if err != nil || st != 201 {
		return "", fmt.Errorf("create user: %d %v %v", st, env, err)
	}
	return env["data"].(map[string]any)["id"].(string), nil
}

type loadResult struct {
	rate     float64
	p50, p99 time.Duration
	// worst is the highest p99 of any one second of an open loop (by when the requests
	// were due), and worstAt that second: a run's p99 made by a stall of a second or two
	// shows here as one bad second among good ones.
	worst   time.Duration
	worstAt int
}

// chatbotWithKnowledge makes a published knowledge-base chatbot with n trained entries
// and returns its id.
func (s *server) chatbotWithKnowledge(n int) (string, error) {
	st, env, err := s.call("POST", "/api/v1/chatbots", s.token, map[string]any{"name": fmt.Sprintf("Bench bot %d", n)})
	if err != nil || st != 201 {
		return "", fmt.Errorf("create chatbot: %d %v %v", st, env, err)
	}
	bot := env["data"].(map[string]any)["id"].(string)
	entries := make([]map[string]string, n)
	for i := range entries {
		entries[i] = map[string]string{"question": fmt.Sprintf("How do I configure feature %d of product line %d?", i, i%37),
			"answer": fmt.Sprintf("Open settings, choose feature %d, and follow the steps.", i)}
	}
	if st, env, err := s.call("POST", "/api/v1/chatbots/"+bot+"/knowledge/import", s.token, entries); err != nil || st != 201 {
		return "", fmt.Errorf("import: %d %v %v", st, env, err)
	}
	if st, env, err := s.call("POST", "/api/v1/chatbots/"+bot+"/train", s.token, nil); err != nil || st != 202 {
		return "", fmt.Errorf("train: %d %v %v", st, env, err)
	}
	for i := 0; ; i++ {
		st, env, err := s.call("GET", "/api/v1/chatbots/"+bot, s.token, nil)
		if err != nil {
			return "", err
		}
		if data, ok := env["data"].(map[string]any); ok && st == 200 {
			if tr, ok := data["training"].(map[string]any); ok && tr["status"] == "completed" {
				break
			}
		}
		if i > 600 {
			return "", errors.New("training did not complete")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st, env, err := s.call("POST", "/api/v1/chatbots/"+bot+"/publish", s.token, nil); err != nil || st != 200 {
		return "", fmt.Errorf("publish: %d %v %v", st, env, err)
	}
	return bot, nil
}

func (s *server) conversation(bot string) (string, error) {
	st, env, err := s.call("POST", "/api/v1/chatbots/"+bot+"/conversations", s.token, map[string]any{})
	if err != nil || st != 201 {
		return "", fmt.Errorf("start conversation: %d %v %v", st, env, err)
	}
	return env["data"].(map[string]any)["id"].(string), nil
}

// post posts a message and returns its id.
func (s *server) post(conv string, content string) (string, error) {
	st, env, err := s.call("POST", "/api/v1/conversations/"+conv+"/messages", s.token, map[string]any{"content": content})
	if err != nil || st != 202 {
		return "", fmt.Errorf("post: %d %v %v", st, env, err)
	}
	return env["data"].(map[string]any)["id"].(string), nil
}

// answerRate posts n messages from 8 clients and returns replies per second, from the
// first post to the last reply in the event log.
func (s *server) answerRate(pool *pgxpool.Pool, conv string, n int) (float64, error) {
	var before int
	if err := pool.QueryRow(s.ctx, `SELECT count(*) FROM events WHERE type = 'message.replied'`).Scan(&before); err != nil {
		return 0, err
	}
	start := time.Now()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				if _, err := s.post(conv, fmt.Sprintf("How do I configure feature %d of product line %d?", i*7, (i*7)%37)); err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		return 0, fmt.Errorf("%d posts failed", failed.Load())
	}
	for i := 0; ; i++ {
		var after int
		if err := pool.QueryRow(s.ctx, `SELECT count(*) FROM events WHERE type = 'message.replied'`).Scan(&after); err != nil {
			return 0, err
		}
		if after-before >= n {
			return float64(n) / time.Since(start).Seconds(), nil
		}
		if i > 6000 {
			return 0, fmt.Errorf("%d of %d replies", after-before, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// replyLatency times, one message at a time, from the 202 to the reply being readable
// through GET /conversations/{id}/messages.
func (s *server) replyLatency(conv string, samples int) (p50, p99 time.Duration, err error) {
	var lat []time.Duration
	for i := 0; i < samples; i++ {
		id, err := s.post(conv, fmt.Sprintf("How do I configure feature %d of product line %d?", i*13, (i*13)%37))
		if err != nil {
			return 0, 0, err
		}
		t0 := time.Now()
		for {
			// The conversation holds 2i messages before this one, so its reply is item 2i+1
			// (0-based), on this page of 100.
			page := (2*i+1)/100 + 1
			_, env, err := s.call("GET", fmt.Sprintf("/api/v1/conversations/%s/messages?per_page=100&page=%d", conv, page), s.token, nil)
			if err != nil {
				return 0, 0, err
			}
			if replied(env, id) {
				break
			}
			if time.Since(t0) > 10*time.Second {
				return 0, 0, fmt.Errorf("no reply to %s", id)
			}
			// A pause between polls: back to back, this one client kept a core busy (its
			// requests and the server's answers, pages of up to 100 messages) that the
			// responder's pipeline shares.
			time.Sleep(2 * time.Millisecond)
		}
		lat = append(lat, time.Since(t0))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat[len(lat)/2], lat[len(lat)*99/100], nil
}

// replied looks for the reply to id in a page of messages.
func replied(env map[string]any, id string) bool {
	data, _ := env["data"].([]any)
	for _, m := range data {
		if mm, ok := m.(map[string]any); ok && mm["reply_to"] == id {
			return true
		}
	}
	return false
}

// postCost posts total messages into one conversation and returns the p50 time of a
// POST for the first 200 and for the last 200.
func (s *server) postCost(conv string, total int) (first, last time.Duration, err error) {
	var firsts, lasts []time.Duration
	for i := 0; i < total; i++ {
		t0 := time.Now()
		if _, err := s.post(conv, "hello"); err != nil {
			return 0, 0, err
		}
		d := time.Since(t0)
		switch {
		case i < 200:
			firsts = append(firsts, d)
		case i >= total-200:
			lasts = append(lasts, d)
		}
	}
	sort.Slice(firsts, func(i, j int) bool { return firsts[i] < firsts[j] })
	sort.Slice(lasts, func(i, j int) bool { return lasts[i] < lasts[j] })
	return firsts[len(firsts)/2], lasts[len(lasts)/2], nil
}

func writeBetweenMarkers(path, body string) error { return measure.WriteBlock(path, "bench", "", body) }

func pgVersion(ctx context.Context, pool interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) string {
	var v string
	_ = pool.QueryRow(ctx, "SHOW server_version").Scan(&v)
	return v
}

// releaseClaim deletes the queue that records which store the queues named with prefix
// serve (broker.ClaimQueues).
func releaseClaim(amqpURL, prefix string) error {
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	_, err = ch.QueueDelete(prefix+broker.ClaimSuffix, false, false, false)
	return err
}
