// Command chaos breaks the system on purpose and checks that nothing was lost. Each
// scenario starts chatbotd (the chaos build, -tags chaos: see internal/faults) on a
// database, exchange, queues and Redis prefix of its own, runs a steady command load
// that keeps a ledger of every 2xx, injects a fault, recovers, and checks the
// invariants; it prints a table of scenario → invariant → result.
//
//	make chaos                      (go run ./cmd/chaos -binary bin/chatbotd-chaos)
//	go run ./cmd/chaos -run redis,postgres
//	make soak                       (go run ./cmd/chaos -soak 30m -out BENCHMARKS.md)
//
// It stops and starts the local PostgreSQL, Redis and RabbitMQ, and restores them when
// it ends, failed or interrupted.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
}

type options struct {
	binary   string
	server   string // PostgreSQL server URL (its postgres database)
	amqpURL  string
	redis    string
	workers  int
	loadFor  time.Duration // load before the fault, and after it
	keep     bool
	soak     time.Duration
	sample   time.Duration
	out      string
	scenario string
}

func run(ctx context.Context) error {
	var o options
	flag.StringVar(&o.binary, "binary", "bin/chatbotd-chaos", "chatbotd built with -tags chaos")
	flag.StringVar(&o.server, "postgres", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "PostgreSQL server")
	flag.StringVar(&o.amqpURL, "amqp", "amqp://guest:guest@127.0.0.1:5672/", "RabbitMQ")
	flag.StringVar(&o.redis, "redis", "127.0.0.1:6379", "Redis (host:port)")
	flag.IntVar(&o.workers, "workers", 6, "load generator clients")
	flag.DurationVar(&o.loadFor, "load", 8*time.Second, "load before the fault and after recovery")
	flag.BoolVar(&o.keep, "keep", false, "keep each scenario's database (it is dropped when the scenario passes)")
	flag.StringVar(&o.scenario, "run", "", "comma-separated scenarios (default: all): "+strings.Join(scenarioNames(), ", "))
	flag.DurationVar(&o.soak, "soak", 0, "instead of the scenarios, a soak of this length")
	flag.DurationVar(&o.sample, "sample", 30*time.Second, "soak: time between samples")
	flag.StringVar(&o.out, "out", "", "soak: markdown file to write the curves into (stdout when empty)")
	flag.Parse()
	if _, err := os.Stat(o.binary); err != nil {
		return fmt.Errorf("%s: %w (make chaos builds it)", o.binary, err)
	}

	sys := newSystem(o)
	if err := sys.startWorkflow(); err != nil {
		return fmt.Errorf("workflow: %w", err)
	}
	// Whatever happens, the services are running and unpaused when this returns.
	defer sys.restore()
	if err := sys.restore(); err != nil {
		return fmt.Errorf("services: %w", err)
	}
	if o.soak > 0 {
		return soak(ctx, sys, o)
	}
	chosen, err := pick(o.scenario)
	if err != nil {
		return err
	}
	var results []result
	began := time.Now()
	failed := 0
	for _, sc := range chosen {
		fmt.Fprintf(os.Stderr, "\n=== %s: %s\n", sc.name, sc.about)
		rs := runScenario(ctx, sys, o, sc)
		for _, r := range rs {
			if !r.ok {
				failed++
			}
		}
		results = append(results, rs...)
		printTable(os.Stderr, rs)
		if err := sys.restore(); err != nil {
			return fmt.Errorf("restore the services after %s: %w", sc.name, err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	fmt.Printf("\nchaos: %d scenarios in %s\n\n", len(chosen), time.Since(began).Round(time.Second))
	printTable(os.Stdout, results)
	if failed > 0 {
		return fmt.Errorf("%d invariants failed", failed)
	}
	return ctx.Err()
}

// result is one invariant of one scenario.
type result struct {
	scenario  string
	invariant string
	ok        bool
	detail    string
}

func printTable(w interface{ Write([]byte) (int, error) }, rs []result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tINVARIANT\tRESULT\tDETAIL")
	for _, r := range rs {
		verdict := "ok"
		if !r.ok {
			verdict = "FAIL"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.scenario, r.invariant, verdict, r.detail)
	}
	tw.Flush()
}
