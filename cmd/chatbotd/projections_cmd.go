package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatbotsaas/chatbotd/internal/config"
	"github.com/chatbotsaas/chatbotd/internal/db"
	"github.com/chatbotsaas/chatbotd/projections"
)

// The operators' commands on projections: rebuild, verify, status, dead letters and
// redrive (the audit trail's are in audit_cmd.go, replay in replay_cmd.go). Each opens
// its own connections, applies pending migrations first (like serve) and writes its
// results to stdout, its progress and logs to stderr.

func openPool(ctx context.Context, cfg config.Config, logger *slog.Logger) (*pgxpool.Pool, error) {
	if err := migrate(ctx, cfg, logger); err != nil {
		return nil, err
	}
	return db.Open(ctx, cfg.DatabaseURL, 4)
}

// rebuildable lists the projections a rebuild can replace (the registry's rebuildable
// parts).
func rebuildable() []projections.Rebuildable { return projections.Rebuildables(projections.Deps{}) }

func (m *Main) projectionsCommand(ctx context.Context, cfg config.Config, logger *slog.Logger, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "status":
			return m.projectionsStatus(ctx, cfg, logger, args[1:])
		case "dead-letters", "redrive":
			return m.deadLetters(ctx, cfg, logger, args[0], args[1:])
		}
	}
	if len(args) == 0 || (args[0] != "rebuild" && args[0] != "verify") {
		return errors.New("usage: chatbotd projections rebuild NAME|--all [--restore-pruned] | verify NAME|--all [--wait D] | status | dead-letters NAME | redrive NAME")
	}
	verb := args[0]
	fs := flag.NewFlagSet("projections "+verb, flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	all := fs.Bool("all", false, verb+" every projection")
	restore := fs.Bool("restore-pruned", false, "audit: bring back the entries that audit prune removed (rebuild only)")
	batch := fs.Int("batch", 5000, "events per transaction")
	wait := fs.Duration("wait", 30*time.Second, "verify: how long a projection that differs is given to catch up")
	names, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return err
	}
	var chosen []projections.Rebuildable
	known := map[string]projections.Rebuildable{}
	var list []string
	for _, p := range rebuildable() {
		known[p.Name()] = p
		list = append(list, p.Name())
	}
	switch {
	case *all && len(names) == 0:
		chosen = rebuildable()
	case !*all && len(names) > 0:
		for _, n := range names {
			p, ok := known[n]
			if !ok {
				return fmt.Errorf("no projection %q can be rebuilt (projections: %s)", n, strings.Join(list, ", "))
			}
			chosen = append(chosen, p)
		}
	default:
		return fmt.Errorf("name the projections to %s (%s), or give --all", verb, strings.Join(list, ", "))
	}
	pool, err := openPool(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer pool.Close()
	if verb == "verify" {
		return m.verifyProjections(ctx, pool, chosen, *batch, *wait)
	}
	for _, p := range chosen {
		rb := &projections.Rebuild{Pool: pool, Projector: p, BatchSize: *batch, Progress: progressPrinter(m.Stderr, "rebuild")}
		if p.Name() == projections.AuditName {
			rb.BeforeSwap = auditRetention(*restore)
		}
		if err := rb.Run(ctx); err != nil {
			return fmt.Errorf("rebuild %s: %w", p.Name(), err)
		}
	}
	return nil
}

// verifyProjections compares each projection with a replay of the log and prints one
// line per table; it fails when one differs.
func (m *Main) verifyProjections(ctx context.Context, pool *pgxpool.Pool, chosen []projections.Rebuildable, batch int, wait time.Duration) error {
	var differ []string
	for _, p := range chosen {
		rb := &projections.Rebuild{Pool: pool, Projector: p, BatchSize: batch, Progress: progressPrinter(m.Stderr, "verify")}
		if p.Name() == projections.AuditName {
			rb.BeforeSwap = auditRetention(false) // compared as pruned as the live trail is
		}
		c, err := rb.Verify(ctx, wait)
		if err != nil {
			return fmt.Errorf("verify %s: %w", p.Name(), err)
		}
		verdict := "equal to a replay of the log"
		if !c.Equal {
			verdict = "DIFFERS from a replay of the log"
			differ = append(differ, p.Name())
		}
		fmt.Fprintf(m.Stdout, "%s: %s\n", p.Name(), verdict)
		for _, t := range c.Tables {
			fmt.Fprintf(m.Stdout, "  %s: %d rows, %d only live, %d only in the replay\n", t.Table, t.Rows, t.OnlyLive, t.OnlyRebuilt)
		}
	}
	if len(differ) > 0 {
		return fmt.Errorf("%s differ from a replay of the log (a rebuild replaces them)", strings.Join(differ, ", "))
	}
	return nil
}

// auditRetention keeps a rebuilt audit trail as pruned as the live one, or, with
// restore, brings the pruned entries back and forgets the prunes.
func auditRetention(restore bool) func(ctx context.Context, tx pgx.Tx) error {
	return func(ctx context.Context, tx pgx.Tx) error {
		if restore {
			_, err := tx.Exec(ctx, `DELETE FROM public.audit_prunes`)
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM audit_entries WHERE occurred_at < (SELECT max(before) FROM public.audit_prunes)`)
		return err
	}
}

// progressPrinter prints a rebuild's progress at most once a second, and at each phase.
func progressPrinter(w io.Writer, verb string) func(projections.Progress) {
	var last time.Time
	var phase string
	return func(p projections.Progress) {
		if p.Phase == phase && time.Since(last) < time.Second {
			return
		}
		last, phase = time.Now(), p.Phase
		pct := 100.0
		if p.Total > 0 {
			pct = min(100, 100*float64(p.Done)/float64(p.Total))
		}
		fmt.Fprintf(w, "%s %s: %s, %d/%d events (%.0f%%), %.0f events/s, %s left\n", verb, p.Projection, p.Phase,
			p.Done, p.Total, pct, p.Rate(), p.Left().Round(time.Second))
	}
}

// parseInterspersed parses flags that may come before or after the positional
// arguments, which it returns.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// projectionsStatus prints the relay's and each projection's progress: a table, or the
// JSON of GET /api/v1/admin/projections with --json.
func (m *Main) projectionsStatus(ctx context.Context, cfg config.Config, logger *slog.Logger, args []string) error {
	fs := flag.NewFlagSet("projections status", flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	if err := fs.Parse(args); err != nil {
		return err
	}
	d, err := operatorDeps(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer d.close()
	st, err := d.status(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(m.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	fmt.Fprintf(m.Stdout, "relay: position %d, %d events behind, lag %.1fs\n\n", st.Relay.Position, st.Relay.Behind, st.Relay.LagSeconds)
	w := tabwriter.NewWriter(m.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "PROJECTION\tPOSITION\tAPPLIED\tQUEUED\tLAG\tDEAD\tCONSUMERS\tLAST BATCH\tSWEPT\tREDRIVEN")
	num := func(p *int) string {
		if p == nil {
			return "?"
		}
		return fmt.Sprint(*p)
	}
	for _, p := range st.Projections {
		pos, last, lag := "-", "-", "-"
		if p.Position != nil {
			pos = fmt.Sprint(*p.Position)
		}
		if p.UpdatedAt != nil {
			last = p.UpdatedAt.UTC().Format(time.RFC3339)
		}
		if p.LagSeconds != nil {
			lag = fmt.Sprintf("%.1fs", *p.LagSeconds)
		}
		swept := "-"
		if p.SweptAt != nil {
			swept = p.SweptAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", p.Name, pos, p.EventsApplied, num(p.Queued), lag,
			num(p.DeadLettered), num(p.Consumers), last, swept, p.EventsRedriven)
	}
	return w.Flush()
}

// deadLetters lists (as JSON lines) or redrives a projection's dead-lettered events.
func (m *Main) deadLetters(ctx context.Context, cfg config.Config, logger *slog.Logger, verb string, args []string) error {
	fs := flag.NewFlagSet("projections "+verb, flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	limit := fs.Int("limit", 1000, "at most this many events")
	names, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(names) != 1 || *limit < 1 {
		return fmt.Errorf("usage: chatbotd projections %s NAME [--limit N]", verb)
	}
	d, err := operatorDeps(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer d.close()
	tracked, err := d.tracked()
	if err != nil {
		return err
	}
	var known []string
	for _, t := range tracked {
		known = append(known, t.Name)
		if t.Name != names[0] {
			continue
		}
		bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if verb == "redrive" {
			moved, err := projections.Redrive(bctx, d.pool, d.broker, t, *limit)
			fmt.Fprintf(m.Stdout, "%d dead-lettered events of %s sent back to %s\n", moved, t.Name, t.Queue.Name)
			return err
		}
		list, err := projections.ListDeadLetters(bctx, d.broker, t.Queue, *limit)
		if err != nil {
			return err
		}
		enc := json.NewEncoder(m.Stdout)
		for _, l := range list {
			if err := enc.Encode(l); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("no projection %q (projections: %s)", names[0], strings.Join(known, ", "))
}
