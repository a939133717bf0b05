package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatbotsaas/chatbotd/internal/db"
	"github.com/chatbotsaas/chatbotd/internal/measure"
)

// sample is the soak's view of chatbotd at one moment.
type sample struct {
	at         time.Duration
	rssMiB     float64
	heapMiB    float64
	goroutines int
	fds        int
	pgConns    int
	requests   int
	events     int64
}

// soak runs a paced mixed load against one chatbotd for o.soak, samples its memory,
// goroutines, open files and database connections every o.sample, then checks the same
// invariants as the scenarios and that nothing grew beyond a bound.
func soak(ctx context.Context, sys *system, o options) error {
	n := namesFor("soak")
	sys.cleanup(n, true)
	dbURL, err := db.Recreate(ctx, sys.o.server, n.database)
	if err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	addr := freePort()
	logFile := logPath("soak", 0)
	_ = os.Remove(logFile)
	p, err := sys.start(ctx, sys.serveEnv(dbURL, n, addr), addr, logFile)
	if err != nil {
		return err
	}
	defer p.stop()
	c := &client{http: &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}, bases: []string{p.base}}
	f, err := setup(ctx, c, sys.workflow)
	if err != nil {
		return err
	}
	// Paced, well below the peak: a soak looks for leaks, not for the ceiling.
	l := startLoad(ctx, c, f, o.workers, 40*time.Millisecond)
	chk := &checker{sc: "soak", sys: sys, n: n, pool: pool, dbURL: dbURL, l: l}
	began := time.Now()
	var samples []sample
	take := func() {
		s := sample{at: time.Since(began)}
		s.rssMiB = rssMiB(p.cmd.Process.Pid)
		if entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid)); err == nil {
			s.fds = len(entries)
		}
		m := scrape(p.base)
		s.heapMiB, s.goroutines = m["go_memstats_heap_inuse_bytes"]/(1<<20), int(m["go_goroutines"])
		_ = pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`).Scan(&s.pgConns)
		_ = pool.QueryRow(ctx, `SELECT coalesce(max(position), 0) FROM events`).Scan(&s.events)
		for _, v := range l.snapshot() {
			s.requests += v
		}
		samples = append(samples, s)
		fmt.Fprintf(os.Stderr, "soak %s: rss %.0f MiB, heap %.0f MiB, %d goroutines, %d fds, %d pg conns, %d requests, %d events\n",
			s.at.Round(time.Second), s.rssMiB, s.heapMiB, s.goroutines, s.fds, s.pgConns, s.requests, s.events)
	}
	take()
	for time.Since(began) < o.soak && ctx.Err() == nil && p.alive() {
		sleep(ctx, min(o.sample, o.soak-time.Since(began)))
		take()
	}
	l.stop()
	if !p.alive() {
		return fmt.Errorf("chatbotd exited during the soak: %v (see %s)", p.err, logFile)
	}
	took, err := settle(ctx, pool, n, 5*time.Minute)
	chk.add("caught up after the load", err == nil, "drained %s after the load stopped (%v)", took.Round(10*time.Millisecond), err)
	bounds := growth(samples)
	for _, b := range bounds {
		chk.out = append(chk.out, b)
	}
	chk.common(ctx)
	printTable(os.Stdout, chk.out)
	report := soakReport(samples, chk.out, o)
	ok := true
	for _, r := range chk.out {
		ok = ok && r.ok
	}
	p.stop()
	sys.cleanup(n, ok && !o.keep)
	if o.out != "" {
		if err := writeBetweenMarkers(o.out, report); err != nil {
			return err
		}
	} else {
		fmt.Print(report)
	}
	if !ok {
		return fmt.Errorf("the soak failed an invariant (database %s and %s kept)", n.database, logFile)
	}
	return nil
}

// growth compares the last third of the samples with the middle third (the first third
// is warm-up: caches, pools and partitions fill): memory may grow by a quarter, the
// counts by a few.
func growth(s []sample) []result {
	if len(s) < 6 {
		return []result{{scenario: "soak", invariant: "no growth beyond a bound", ok: false, detail: fmt.Sprintf("%d samples: too few to tell", len(s))}}
	}
	third := len(s) / 3
	mid, last := s[third:2*third], s[2*third:]
	peak := func(part []sample, f func(sample) float64) float64 {
		m := 0.0
		for _, x := range part {
			m = max(m, f(x))
		}
		return m
	}
	check := func(name string, f func(sample) float64, allowed func(float64) float64, unit string) result {
		a, b := peak(mid, f), peak(last, f)
		return result{scenario: "soak", invariant: "bounded " + name, ok: b <= allowed(a),
			detail: fmt.Sprintf("peak %.0f%s in the middle third, %.0f%s in the last (bound %.0f%s)", a, unit, b, unit, allowed(a), unit)}
	}
	return []result{
		check("resident memory", func(x sample) float64 { return x.rssMiB }, func(a float64) float64 { return a*1.25 + 16 }, " MiB"),
		check("heap in use", func(x sample) float64 { return x.heapMiB }, func(a float64) float64 { return a*1.25 + 16 }, " MiB"),
		check("goroutines", func(x sample) float64 { return float64(x.goroutines) }, func(a float64) float64 { return a + 25 }, ""),
		check("open files", func(x sample) float64 { return float64(x.fds) }, func(a float64) float64 { return a + 25 }, ""),
		check("database connections", func(x sample) float64 { return float64(x.pgConns) }, func(a float64) float64 { return a + 5 }, ""),
	}
}

func soakReport(s []sample, rs []result, o options) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Run on %s: %s, %d cores; %s. Command: `make soak` (`go run ./cmd/chaos -soak %s -sample %s -workers %d`): "+
		"%d clients, each pausing 40 ms between requests, with the scenarios' mix (35%% chat messages answered by the knowledge-base "+
		"responder, 30%% chatbot creations and renames, 15%% user creations and renames, 20%% cached reads).\n\n",
		time.Now().UTC().Format("2006-01-02"), measure.CPUModel(), runtime.NumCPU(), runtime.Version(), o.soak, o.sample, o.workers, o.workers)
	b.WriteString("| time | resident MiB | heap in use MiB | goroutines | open files | PostgreSQL connections | requests | events in the log |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	step := max(1, len(s)/20) // about twenty rows
	for i := 0; i < len(s); i++ {
		if i%step != 0 && i != len(s)-1 {
			continue
		}
		x := s[i]
		fmt.Fprintf(&b, "| %s | %.0f | %.0f | %d | %d | %d | %d | %d |\n", x.at.Round(time.Second), x.rssMiB, x.heapMiB, x.goroutines, x.fds, x.pgConns, x.requests, x.events)
	}
	b.WriteString("\n| invariant | result | detail |\n|---|---|---|\n")
	for _, r := range rs {
		verdict := "ok"
		if !r.ok {
			verdict = "**FAIL**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", r.invariant, verdict, strings.ReplaceAll(r.detail, "|", "/"))
	}
	return b.String()
}

func rssMiB(pid int) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.Fields(v)[0], 64)
			return kb / 1024
		}
	}
	return 0
}

// scrape reads the unlabelled gauges of chatbotd's /metrics.
func scrape(base string) map[string]float64 {
	out := map[string]float64{}
	req, _ := http.NewRequest("GET", base+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer chaos")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return out
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	for _, line := range strings.Split(string(body), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && !strings.HasPrefix(line, "#") {
			if v, err := strconv.ParseFloat(f[1], 64); err == nil {
				out[f[0]] = v
			}
		}
	}
	return out
}

func writeBetweenMarkers(path, body string) error {
	return measure.WriteBlock(path, "soak", "## Soak (issue 9)", body)
}
