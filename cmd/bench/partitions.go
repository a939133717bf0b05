package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/chatbotsaas/chatbotd/projections"
)

// partitionFigures measures the projectors split into 1, 2 and 4 partitions
// (PROJECTOR_PARTITIONS) and run by 1 and 2 processes (`chatbotd serve --roles
// projectors`, the binary itself): a backlog of user.created events of 256 organizations
// is published by the relay into the recorded layout's queues, then the processes start,
// and the rates are taken in the steady state (see partitionRate).
func partitionFigures(ctx context.Context, o options, w io.Writer) error {
	n := o.pipelineEvents / 2
	type figure struct {
		partitions, processes int
		accounts, audit       float64
		cpu                   string
	}
	var figures []figure
	for _, partitions := range []int{1, 2, 4} {
		for _, processes := range []int{1, 2} {
			if o.partitionRuns != "" && !slices.Contains(strings.Split(o.partitionRuns, ","), fmt.Sprintf("%dx%d", partitions, processes)) {
				continue
			}
			acc, aud, cpu, err := partitionRate(ctx, o, n, partitions, processes)
			if err != nil {
				return fmt.Errorf("%d partitions, %d processes: %w", partitions, processes, err)
			}
			fmt.Fprintf(os.Stderr, "partitions: %d partitions over %d processes: accounts %.0f events/s, audit %.0f events/s; cores: %s\n",
				partitions, processes, acc, aud, cpu)
			figures = append(figures, figure{partitions, processes, acc, aud, cpu})
		}
	}
	fmt.Fprint(w, "\n### Partitioned projectors\n\n")
	fmt.Fprintf(w, "A backlog of %d `user.created` events of 256 organizations (one stream each), written straight into the log and "+
		"published by the relay (`serve --roles relay`) into the queues of the layout recorded for the run; then 1 or 2 "+
		"`chatbotd serve --roles projectors` processes with `PROJECTOR_PARTITIONS` set start. The rates are taken in the steady "+
		"state, from the moment the accounts projector (read model and cache) has applied a tenth of the backlog until it has "+
		"applied nine tenths: its events, and the audit trail's, applied per second meanwhile, and the cores each program used. "+
		"Every projector runs meanwhile, as in production (the analytics, notifications and webhook projectors take their share "+
		"of the cores). The ratio is against 1 partition in 1 process.\n\n", n)
	fmt.Fprint(w, "| partitions | processes | accounts events/s | ratio | audit events/s | ratio | cores used |\n|---:|---:|---:|---:|---:|---:|---|\n")
	for _, f := range figures {
		fmt.Fprintf(w, "| %d | %d | %.0f | %.2f× | %.0f | %.2f× | %s |\n", f.partitions, f.processes, f.accounts,
			f.accounts/figures[0].accounts, f.audit, f.audit/figures[0].audit, f.cpu)
	}
	return nil
}

// partitionRate runs one configuration on a database and queue names of its own.
func partitionRate(ctx context.Context, o options, n, partitions, processes int) (accounts, audit float64, cpu string, err error) {
	suffix := fmt.Sprintf("_parts%dx%d", partitions, processes)
	pool, dbURL, err := freshDatabase(ctx, o, suffix)
	if err != nil {
		return 0, 0, "", err
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `INSERT INTO events (id, stream_type, stream_id, stream_version, type, schema_version,
			organization_id, actor_type, data, occurred_at)
		SELECT gen_random_uuid(), 'user', gen_random_uuid(), 1, 'user.created', 1, orgs.ids[1 + i % 256], 'system',
			jsonb_build_object('name', 'Bench User ' || i, 'email', 'user' || i || '@bench.example',
				'roles', '["member"]'::jsonb, 'status', 'active'), clock_timestamp()
		FROM generate_series(1, $1) AS i,
			(SELECT array_agg(gen_random_uuid()) AS ids FROM generate_series(1, 256)) AS orgs`, n); err != nil {
		return 0, 0, "", fmt.Errorf("seed: %w", err)
	}
	var last int64
	if err := pool.QueryRow(ctx, `SELECT max(position) FROM events`).Scan(&last); err != nil {
		return 0, 0, "", err
	}
	// The layout is recorded before the relay declares the queues, as a projectors process
	// would have switched it.
	// The projectors share the group's queue; the reactors have their own.
	consumers := []projections.Projector{projections.NewProjectorGroup(projections.Deps{})}
	for _, p := range projections.Parts() {
		if p.Projector != nil && !p.Grouped() {
			consumers = append(consumers, p.Projector(projections.Deps{}))
		}
	}
	for _, p := range consumers {
		r, err := projections.NewRunner(nil, nil, p, projections.Config{Exchange: "x"})
		if err != nil {
			return 0, 0, "", err
		}
		if projections.Partitionable(r) && partitions > 1 {
			if _, err := pool.Exec(ctx, `INSERT INTO projection_layouts (projection, partitions) VALUES ($1, $2)`, p.Name(), partitions); err != nil {
				return 0, 0, "", err
			}
		}
	}
	names := "bench.parts." + strconv.FormatInt(time.Now().UnixNano(), 36) + "."
	defer removeByPrefix(o.amqpURL, names)
	env := []string{"DATABASE_URL=" + dbURL, "LOG_LEVEL=" + cmp.Or(os.Getenv("BENCH_LOG_LEVEL"), "warn"), "AMQP_EXCHANGE=" + names + "events", "AMQP_QUEUE_PREFIX=" + names,
		"REDIS_PREFIX=bench:parts:", "PROJECTOR_PARTITIONS=" + strconv.Itoa(partitions)}

	relay, err := startRole(ctx, o, env, "relay", 0)
	if err != nil {
		return 0, 0, "", err
	}
	err = waitFor(ctx, 5*time.Minute, func() (bool, error) {
		var pos int64
		err := pool.QueryRow(ctx, `SELECT coalesce(max(position), 0) FROM relay_checkpoints WHERE name = 'default'`).Scan(&pos)
		return pos >= last, err
	})
	relay()
	if err != nil {
		return 0, 0, "", fmt.Errorf("relay: %w", err)
	}

	for i := range processes {
		stop, err := startRole(ctx, o, env, "projectors", i+1)
		if err != nil {
			return 0, 0, "", err
		}
		defer stop()
	}
	// The rate is taken in the steady state: from the moment the accounts projector has
	// applied a tenth of the backlog until it has applied nine tenths (the processes' start
	// and the last partial batches left out), with the CPU time each process name spent
	// meanwhile.
	applied := func(name string) int64 {
		var got int64
		_ = pool.QueryRow(ctx, `SELECT coalesce(sum(events_applied), 0)::bigint FROM projection_positions
			WHERE split_part(projection, '#', 1) = $1`, name).Scan(&got)
		return got
	}
	reached := func(name string, share float64) func() (bool, error) {
		return func() (bool, error) { return applied(name) >= int64(float64(n)*share), nil }
	}
	if err := waitFor(ctx, 10*time.Minute, reached(projections.AccountsName, 0.1)); err != nil {
		return 0, 0, "", fmt.Errorf("accounts: %w", err)
	}
	commits := func() int64 {
		var c int64
		_ = pool.QueryRow(ctx, `SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()`).Scan(&c)
		return c
	}
	from, auditFrom, commitsFrom := applied(projections.AccountsName), applied(projections.AuditName), commits()
	start := time.Now()
	shares, err := cpuShares(func() error { return waitFor(ctx, 10*time.Minute, reached(projections.AccountsName, 0.9)) })
	if err != nil {
		return 0, 0, "", fmt.Errorf("accounts: %w", err)
	}
	took := time.Since(start).Seconds()
	accounts = float64(applied(projections.AccountsName)-from) / took
	audit = float64(applied(projections.AuditName)-auditFrom) / took
	cpu = formatShares(shares)
	// Every projector's batch is one transaction: how many events each carried, on average.
	if c := commits() - commitsFrom; c > 0 {
		cpu += fmt.Sprintf("; %.0f transactions/s", float64(c)/took)
	}
	if err := waitFor(ctx, 10*time.Minute, reached(projections.AuditName, 1)); err != nil {
		return 0, 0, "", fmt.Errorf("audit: %w", err)
	}
	if err := checkLayout(ctx, pool, partitions); err != nil {
		return 0, 0, "", err
	}
	return accounts, audit, cpu, nil
}

// checkLayout checks that the run consumed the layout it was meant to.
func checkLayout(ctx context.Context, pool *pgxpool.Pool, partitions int) error {
	var got int
	err := pool.QueryRow(ctx, `SELECT coalesce(max(partitions), 1) FROM projection_layouts WHERE projection = $1`,
		projections.GroupName).Scan(&got)
	if err == nil && got != partitions {
		err = fmt.Errorf("the projectors ran with %d partitions, not %d", got, partitions)
	}
	return err
}

// startRole starts `chatbotd serve --roles role` with env; the returned function stops it
// (SIGINT, then a clean shutdown).
func startRole(ctx context.Context, o options, env []string, role string, i int) (func(), error) {
	stop, _, err := spawn(ctx, o, []string{"serve", "--roles", role}, append(env, "HTTP_ADDR=127.0.0.1:0"),
		fmt.Sprintf("%s.%s-%d.log", o.binary, role, i))
	return stop, err
}

// removeByPrefix deletes the queues and exchanges whose names begin with prefix.
func removeByPrefix(amqpURL, prefix string) {
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		return
	}
	defer conn.Close()
	for _, kind := range []string{"list_queues", "list_exchanges"} {
		out, err := exec.Command("rabbitmqctl", "-q", kind, "name").Output()
		if err != nil {
			continue
		}
		for _, name := range strings.Fields(string(out)) {
			if !strings.HasPrefix(name, prefix) {
				continue
			}
			ch, err := conn.Channel()
			if err != nil {
				return
			}
			if kind == "list_queues" {
				_, err = ch.QueueDelete(name, false, false, false)
			} else {
				err = ch.ExchangeDelete(name, false, false)
			}
			if err != nil && !errors.Is(err, amqp.ErrClosed) {
				fmt.Fprintf(os.Stderr, "remove %s: %v\n", name, err)
			}
			ch.Close()
		}
	}
}
