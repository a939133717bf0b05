package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/db"
)

// scenario is one fault and its recovery.
type scenario struct {
	name, about string
	servers     int      // chatbotd processes (1 when 0)
	env         []string // extra environment of the first start of each process
	// rabbitNodes, when set, runs the scenario on a RabbitMQ cluster of its own with that
	// many nodes (AMQP_URL lists them), torn down afterwards.
	rabbitNodes int
	// replicaDelay, when set, runs the scenario on a PostgreSQL primary and streaming
	// replica of its own (pgPair) that applies with that delay: DATABASE_URL names both
	// (the one that takes writes serves), DATABASE_READ_URL the replica.
	replicaDelay time.Duration
	// inject runs while the load runs: it breaks something, adds the results it can see
	// while broken, and repairs it (or has chatbotd restarted). The load goes on for a
	// while after it returns.
	inject func(ctx context.Context, r *scenarioRun) error
	// after runs once the system has settled, before the common invariants.
	after func(ctx context.Context, r *scenarioRun) error
}

var scenarios = []scenario{
	{name: "rabbitmq-kill", about: "RabbitMQ killed with SIGKILL mid-load, twice, then started again", inject: rabbitKill},
	{name: "postgres-stop", about: "PostgreSQL stopped in immediate mode mid-load, then started", inject: postgresStop},
	{name: "redis-down", about: "Redis unresponsive (SIGSTOP) for 30 s, its data kept, then continued", inject: redisDown},
	{name: "kill-projector-batch", about: "chatbotd SIGKILLed in the middle of a projector batch (written, not committed), restarted",
		env: []string{"CHAOS_CRASH_AT=projector.batch:400"}, inject: crashed("projector.batch")},
	{name: "kill-relay-batch", about: "chatbotd SIGKILLed in the middle of a relay batch (published and confirmed, checkpoint not saved), restarted",
		env: []string{"CHAOS_CRASH_AT=relay.batch:150"}, inject: crashed("relay.batch")},
	{name: "duplicates-poison", about: "every message delivered twice, and one poison event: dead-lettered, the rest flows; redriven after the fix",
		env: []string{"CHAOS_DUPLICATE_DELIVERY=1", "CHAOS_POISON=chatbots:chaos-poison"}, inject: poison, after: redrivePoison},
	{name: "disk-alarm", about: "RabbitMQ disk alarm (disk_free_limit above free space): publishing blocks, then drains", inject: diskAlarm},
	{name: "rabbitmq-node-kill", about: "a 3-node RabbitMQ cluster; the node chatbotd is connected to SIGKILLed, restarted, then the next one",
		rabbitNodes: 3, inject: rabbitNodeKill},
	{name: "replica-lag", about: "queries served from a streaming replica 300 ms behind; then the primary crashes and the replica is promoted",
		replicaDelay: 300 * time.Millisecond, inject: replicaLag},
	{name: "two-servers", about: "two chatbotd serve processes; the relay leader SIGKILLed, the standby takes over", servers: 2, inject: leaderKill},
	{name: "partitions-kill", about: "projectors in 4 partitions shared by two processes; one SIGKILLed, the other takes its partitions, then it rejoins",
		servers: 2, env: []string{"PROJECTOR_PARTITIONS=4"}, inject: partitionsKill},
}

func scenarioNames() []string {
	var out []string
	for _, s := range scenarios {
		out = append(out, s.name)
	}
	return out
}

func pick(list string) ([]scenario, error) {
	if list == "" {
		return scenarios, nil
	}
	var out []scenario
	for _, name := range strings.Split(list, ",") {
		found := false
		for _, s := range scenarios {
			if s.name == strings.TrimSpace(name) {
				out, found = append(out, s), true
			}
		}
		if !found {
			return nil, fmt.Errorf("no scenario %q (scenarios: %s)", name, strings.Join(scenarioNames(), ", "))
		}
	}
	return out, nil
}

// scenarioRun is a scenario in progress.
type scenarioRun struct {
	sys   *system
	n     names
	dbURL string
	pool  *pgxpool.Pool
	procs []*proc
	logs  []string
	// cluster is the scenario's own RabbitMQ cluster, if it has one; env is what every
	// start of chatbotd gets for it.
	cluster *rabbitCluster
	// keep: the scenario failed (or -keep): its own engines' data stays for a look.
	keep bool
	pg   *pgPair
	env  []string
	c    *client
	f    *fixture
	l    *load
	chk  *checker
}

// restart starts process i again on its address, without the scenario's extra
// environment (the fault is over).
func (r *scenarioRun) restart(ctx context.Context, i int, extra ...string) error {
	p, err := r.sys.start(ctx, r.sys.serveEnv(r.dbURL, r.n, r.procs[i].addr, append(r.env, extra...)...), r.procs[i].addr, r.logs[i])
	if err != nil {
		return err
	}
	r.procs[i] = p
	return nil
}

func runScenario(ctx context.Context, sys *system, o options, sc scenario) []result {
	n := namesFor(sc.name)
	sys.cleanup(n, true)
	r := &scenarioRun{sys: sys, n: n}
	r.chk = &checker{sc: sc.name, sys: sys, n: n}
	fail := func(what string, err error) []result {
		r.chk.add(what, false, "%v", err)
		for _, p := range r.procs {
			if p.alive() {
				p.stop()
			}
		}
		fmt.Fprintf(os.Stderr, "%s: kept database %s, logs %s\n", sc.name, n.database, strings.Join(r.logs, " "))
		r.keep = true
		return r.chk.out
	}
	var err error
	if sc.rabbitNodes > 0 {
		began := time.Now()
		if r.cluster, err = startRabbitCluster(ctx, sc.rabbitNodes); err != nil {
			return fail("rabbitmq cluster started", err)
		}
		defer func() { r.cluster.stop(r.keep) }()
		fmt.Fprintf(os.Stderr, "%s: a RabbitMQ cluster of %d nodes started in %s\n", sc.name, sc.rabbitNodes,
			time.Since(began).Round(time.Second))
		r.n.rabbitNodes = r.cluster.nodeNames()
		r.chk.n, n = r.n, r.n
		r.env = []string{"AMQP_URL=" + r.cluster.urls()}
	}
	if sc.replicaDelay > 0 {
		began := time.Now()
		if r.pg, err = startPGPair(ctx, sys.cluster, sc.replicaDelay); err != nil {
			return fail("postgresql primary and replica started", err)
		}
		defer r.pg.drop()
		fmt.Fprintf(os.Stderr, "%s: a PostgreSQL primary and replica started in %s\n", sc.name, time.Since(began).Round(time.Second))
		if _, err = db.Recreate(ctx, r.pg.url(r.pg.primaryPort, "postgres"), n.database); err != nil {
			return fail("set up", err)
		}
		r.dbURL = r.pg.writeURL(n.database)
		r.env = append(r.env, "DATABASE_READ_URL="+r.pg.url(r.pg.replicaPort, n.database))
	} else if r.dbURL, err = db.Recreate(ctx, sys.o.server, n.database); err != nil {
		return fail("set up", err)
	}
	if r.pool, err = pgxpool.New(ctx, r.dbURL); err != nil {
		return fail("set up", err)
	}
	defer r.pool.Close()
	r.chk.pool, r.chk.dbURL = r.pool, r.dbURL
	servers := max(sc.servers, 1)
	var bases []string
	for i := range servers {
		addr := freePort()
		r.logs = append(r.logs, logPath(sc.name, i))
		_ = os.Remove(r.logs[i])
		p, err := sys.start(ctx, sys.serveEnv(r.dbURL, n, addr, append(r.env, sc.env...)...), addr, r.logs[i])
		if err != nil {
			return fail("chatbotd started", err)
		}
		r.procs = append(r.procs, p)
		bases = append(bases, p.base)
	}
	r.c = &client{http: &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}, bases: bases}
	if r.f, err = setup(ctx, r.c, sys.workflow); err != nil {
		return fail("fixture", err)
	}
	r.l = startLoad(ctx, r.c, r.f, o.workers, 0)
	r.chk.l = r.l
	sleep(ctx, o.loadFor)
	began := time.Now()
	injectErr := sc.inject(ctx, r)
	fmt.Fprintf(os.Stderr, "%s: fault injected and repaired in %s (%v)\n", sc.name, time.Since(began).Round(time.Millisecond), injectErr)
	sleep(ctx, o.loadFor)
	r.l.stop()
	if injectErr != nil {
		return fail("fault injected and repaired", injectErr)
	}
	for i, p := range r.procs {
		if !p.alive() {
			return fail("chatbotd stayed up", fmt.Errorf("process %d exited: %v (see %s)", i, p.err, r.logs[i]))
		}
	}
	took, err := settle(ctx, r.pool, n, 3*time.Minute)
	if err != nil {
		busy, _ := busyQueues(ctx, n)
		return fail("caught up after the load", fmt.Errorf("%w; busy queues %v", err, busy))
	}
	r.chk.add("caught up after the load", took < 2*time.Minute, "relay and every queue drained %s after the load stopped", took.Round(10*time.Millisecond))
	took, redriven, err := swept(ctx, r.pool, time.Minute)
	r.chk.add("the sweep checked every projector against the log", err == nil,
		"up to the relay's checkpoint, %s after the queues drained; events published again (lost by the broker, or held by a stalled consumer): %v (%v)",
		took.Round(10*time.Millisecond), redriven, err)
	if _, err := settle(ctx, r.pool, n, time.Minute); err != nil {
		return fail("caught up after the sweep", err)
	}
	if sc.after != nil {
		if err := sc.after(ctx, r); err != nil {
			return fail("after the fault", err)
		}
	}
	r.chk.common(ctx)
	for _, p := range r.procs {
		p.stop()
	}
	ok := true
	for _, res := range r.chk.out {
		ok = ok && res.ok
	}
	sys.cleanup(n, ok && !o.keep)
	r.keep = !ok || o.keep
	if r.keep {
		fmt.Fprintf(os.Stderr, "%s: kept database %s, logs %s\n", sc.name, n.database, strings.Join(r.logs, " "))
	}
	return r.chk.out
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// during runs the load for d and returns the answers it got meanwhile.
func (r *scenarioRun) during(ctx context.Context, d time.Duration) map[int]int {
	before := r.l.snapshot()
	sleep(ctx, d)
	return diff(r.l.snapshot(), before)
}

func twoXX(m map[int]int) int { return m[200] + m[201] + m[202] }

func rabbitKill(ctx context.Context, r *scenarioRun) error {
	for round := 1; round <= 2; round++ {
		before := r.l.snapshot()
		if err := r.sys.killRabbit(); err != nil {
			return err
		}
		sleep(ctx, 3*time.Second)
		if err := r.sys.startRabbit(ctx); err != nil {
			return err
		}
		got := diff(r.l.snapshot(), before)
		r.chk.add(fmt.Sprintf("commands answered, broker down (%d)", round), twoXX(got) > 0 && got[500] == 0,
			"while the broker was down and restarting: %s", statusLine(got))
		if round == 1 {
			sleep(ctx, 5*time.Second)
		}
	}
	return nil
}

func postgresStop(ctx context.Context, r *scenarioRun) error {
	if err := r.sys.stopPostgresImmediate(ctx); err != nil {
		return err
	}
	got := r.during(ctx, 8*time.Second)
	startErr := r.sys.startPostgres(ctx)
	r.chk.add("503 while PostgreSQL is down, no 500", got[503] > 0 && got[500] == 0 && twoXX(got) == 0,
		"in 8 s down: %s", statusLine(got))
	return startErr
}

func redisDown(ctx context.Context, r *scenarioRun) error {
	if err := pauseRedis(true); err != nil {
		return err
	}
	before := r.l.snapshot()
	sleep(ctx, 5*time.Second)
	// The limits fall back to each process's own limiter: wrong passwords for one
	// address are still cut off after LOGIN_FAILURES_PER_MINUTE (5).
	logins := map[int]int{}
	email := "nobody-" + fmt.Sprint(time.Now().UnixNano()) + "@chaos.example"
	for range 8 {
		st, _, err := r.c.do(ctx, "POST", "/api/v1/auth/login", map[string]string{"email": email, "password": "wrong-password"})
		if err == nil {
			logins[st]++
		}
	}
	r.chk.add("login failures limited, Redis down", logins[429] > 0 && logins[401] > 0 && logins[500]+logins[503] == 0,
		"8 wrong passwords for one address: %s", statusLine(logins))
	sleep(ctx, 25*time.Second)
	got := diff(r.l.snapshot(), before)
	contErr := pauseRedis(false)
	r.chk.add("reads and commands served, Redis down", got[200] > 0 && got[201]+got[202] > 0 && got[500]+got[503]+got[429] == 0,
		"in 30 s down (cache and rate limits fall back): %s", statusLine(got))
	return contErr
}

// crashed waits for the process to kill itself at point (CHAOS_CRASH_AT) and restarts it.
func crashed(point string) func(ctx context.Context, r *scenarioRun) error {
	return func(ctx context.Context, r *scenarioRun) error {
		p := r.procs[0]
		select {
		case <-p.exited:
		case <-time.After(90 * time.Second):
			return fmt.Errorf("chatbotd did not reach %s within 90 s", point)
		case <-ctx.Done():
			return ctx.Err()
		}
		var exit *exec.ExitError
		killed := errors.As(p.err, &exit) && strings.Contains(exit.String(), "killed")
		r.chk.add("killed at "+point, killed, "chatbotd exited: %v", p.err)
		return r.restart(ctx, 0)
	}
}

const poisonName = "chaos-poison bot"

func poison(ctx context.Context, r *scenarioRun) error {
	if _, err := r.c.must(ctx, 201, "POST", "/api/v1/chatbots", map[string]string{"name": poisonName}); err != nil {
		return err
	}
	// The poison event is tried a bounded number of times, then dead-lettered, with its
	// duplicate: two messages.
	return waitFor(ctx, time.Minute, func() (bool, error) {
		dead, err := deadLetters(ctx, r.n)
		return err == nil && dead["chatbots"] == 2, nil
	})
}

// redrivePoison checks that only the poison is missing, then deploys the fix (a restart
// without CHAOS_POISON) and redrives the dead letters.
func redrivePoison(ctx context.Context, r *scenarioRun) error {
	var streams, projected, poisoned int
	if err := r.pool.QueryRow(ctx, `SELECT (SELECT count(DISTINCT stream_id) FROM events WHERE stream_type = 'chatbot'),
		(SELECT count(*) FROM chatbots), (SELECT count(*) FROM chatbots WHERE name = $1)`, poisonName).Scan(&streams, &projected, &poisoned); err != nil {
		return err
	}
	dead, err := deadLetters(ctx, r.n)
	if err != nil {
		return err
	}
	r.chk.add("poison dead-lettered, the rest flowed", dead["chatbots"] == 2 && len(dead) == 1 && projected == streams-1 && poisoned == 0,
		"dead letters %v (the event and its duplicate); %d of %d chatbots projected, the poison's not", dead, projected, streams)
	r.procs[0].stop()
	if err := r.restart(ctx, 0, "CHAOS_DUPLICATE_DELIVERY=1"); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, r.sys.o.binary, "projections", "redrive", "chatbots")
	cmd.Env = r.sys.serveEnv(r.dbURL, r.n, r.procs[0].addr)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("redrive: %v: %s", err, out)
	}
	took, err := settle(ctx, r.pool, r.n, time.Minute)
	r.chk.add("redriven after the fix", err == nil, "settled in %s (%v)", took.Round(10*time.Millisecond), err)
	return err
}

func diskAlarm(ctx context.Context, r *scenarioRun) error {
	ctl := func(args ...string) (string, error) {
		return sh(ctx, "rabbitmqctl", append([]string{"-q"}, args...)...)
	}
	if _, err := ctl("set_disk_free_limit", "1000000GB"); err != nil {
		return err
	}
	if err := waitFor(ctx, 30*time.Second, func() (bool, error) {
		out, err := ctl("eval", "rabbit_alarm:get_alarms().")
		return err == nil && strings.Contains(out, "disk"), nil
	}); err != nil {
		return fmt.Errorf("no disk alarm: %w", err)
	}
	// What was in flight when the alarm rose settles; after that nothing is marked sent.
	sleep(ctx, 3*time.Second)
	before, err := eventstore.RelayLag(ctx, r.pool, "")
	if err != nil {
		return err
	}
	got := r.during(ctx, 12*time.Second)
	after, err := eventstore.RelayLag(ctx, r.pool, "")
	if err != nil {
		return err
	}
	r.chk.add("publishing blocked, nothing marked sent", after.Position == before.Position && after.Behind > before.Behind && twoXX(got) > 0,
		"under the alarm for 12 s: the checkpoint stayed at %d while the events waiting grew from %d to %d; answers %s",
		before.Position, before.Behind, after.Behind, statusLine(got))
	return r.sys.restore()
}

func leaderKill(ctx context.Context, r *scenarioRun) error {
	// The first process took the relay's lock first: it leads, the second stands by.
	leader := r.procs[0]
	leader.kill()
	last, err := head(ctx, r.pool)
	if err != nil {
		return err
	}
	start := time.Now()
	err = waitFor(ctx, time.Minute, func() (bool, error) {
		done, err := published(ctx, r.pool, last)
		return err == nil && done, nil
	})
	r.chk.add("the standby relay took over", err == nil, "the last event at the kill (position %d) published %s later by the standby",
		last.position, time.Since(start).Round(10*time.Millisecond))
	got := r.during(ctx, 3*time.Second)
	r.chk.add("the survivor answers", twoXX(got) > 0 && got[500] == 0, "with one process dead: %s", statusLine(got))
	return r.restart(ctx, 0)
}

// rabbitNodeKill kills, twice, the node of the scenario's cluster that chatbotd is
// connected to (SIGKILL), and starts it again once chatbotd carries on without it. The
// recovery time is from the kill until the relay has published what was committed a
// second after it: the relay and the projectors reconnected through another node.
func rabbitNodeKill(ctx context.Context, r *scenarioRun) error {
	for round := 1; round <= 2; round++ {
		i, err := r.cluster.serving(ctx)
		if err != nil {
			return err
		}
		node := r.cluster.nodes[i].name
		killed := time.Now()
		if err := r.cluster.kill(i); err != nil {
			return err
		}
		sleep(ctx, time.Second)
		last, err := head(ctx, r.pool)
		if err != nil {
			return err
		}
		err = waitFor(ctx, 2*time.Minute, func() (bool, error) {
			done, err := published(ctx, r.pool, last)
			return err == nil && done, nil
		})
		recovered := time.Since(killed)
		got := r.during(ctx, 5*time.Second)
		moved, _ := r.cluster.serving(ctx)
		r.chk.add(fmt.Sprintf("carried on without %s (kill %d)", node, round), err == nil && twoXX(got) > 0 && got[500] == 0 && moved != i,
			"publishing again %s after the kill (through %s); then %s", recovered.Round(10*time.Millisecond), r.cluster.nodes[moved].name,
			statusLine(got))
		if err != nil {
			return fmt.Errorf("not recovered from the loss of %s: %w", node, err)
		}
		began := time.Now()
		if err := r.cluster.start(ctx, i); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "rabbitmq-node-kill: %s back in the cluster in %s\n", node, time.Since(began).Round(time.Second))
	}
	return nil
}

// partitionsKill checks that two processes share the partitions of every projector, kills
// the second one (not the relay's leader: the projectors alone are at stake) and times
// how long until every partition has a consumer again, then starts it again with the
// same setting.
func partitionsKill(ctx context.Context, r *scenarioRun) error {
	applied := func(i int) float64 {
		sum := 0.0
		for k, v := range scrape(r.procs[i].base) {
			if strings.HasPrefix(k, "chatbotd_projector_events_applied_total{") {
				sum += v
			}
		}
		return sum
	}
	a, b := applied(0), applied(1)
	r.chk.add("both processes apply events", a > 0 && b > 0, "events applied before the kill: %.0f by the first process, %.0f by the second", a, b)
	partitions, err := partitionConsumers(ctx, r.n)
	if err != nil {
		return err
	}
	r.procs[1].kill()
	start := time.Now()
	err = waitFor(ctx, time.Minute, func() (bool, error) {
		got, err := partitionConsumers(ctx, r.n)
		if err != nil {
			return false, nil
		}
		for _, c := range got {
			if c == 0 {
				return false, nil
			}
		}
		return len(got) == len(partitions), nil
	})
	r.chk.add("the survivor took every partition", err == nil && len(partitions) > 0, "%d partition queues consumed again %s after the kill",
		len(partitions), time.Since(start).Round(10*time.Millisecond))
	before := applied(0)
	got := r.during(ctx, 3*time.Second)
	r.chk.add("the survivor applies and answers", applied(0) > before && twoXX(got) > 0 && got[500] == 0,
		"with one process dead: %s; %.0f events applied by the survivor in 3 s", statusLine(got), applied(0)-before)
	return r.restart(ctx, 1, "PROJECTOR_PARTITIONS=4")
}

// partitionConsumers counts the consumers of each partition queue of the scenario.
func partitionConsumers(ctx context.Context, n names) (map[string]int, error) {
	out, err := listQueues(ctx, n, "name", "consumers")
	if err != nil {
		return nil, err
	}
	got := map[string]int{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && strings.HasPrefix(f[0], n.queuePrefix) && strings.Contains(f[0], "of4") && !strings.HasSuffix(f[0], ".dead") {
			var c int
			fmt.Sscan(f[1], &c)
			got[f[0]] = c
		}
	}
	return got, nil
}
