package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/config"
	"github.com/chatbotsaas/chatbotd/internal/db"
	"github.com/chatbotsaas/chatbotd/projections"
)

// The operators' commands: rebuild projections, verify and prune the audit trail, replay
// history. Each opens its own connections, applies pending migrations first (like serve)
// and writes its results to stdout, its progress and logs to stderr.

func openPool(ctx context.Context, cfg config.Config, logger *slog.Logger) (*pgxpool.Pool, error) {
	if err := migrate(ctx, cfg, logger); err != nil {
		return nil, err
	}
	return db.Open(ctx, cfg.DatabaseURL, 4)
}

// rebuildable lists the projections a rebuild can replace, by name.
func rebuildable() []projections.Rebuildable {
	return []projections.Rebuildable{projections.NewAccounts(nil, nil, nil), projections.Chatbots{},
		projections.Conversations{}, projections.Audit{}, projections.Analytics{}}
}

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

func (m *Main) auditCommand(ctx context.Context, cfg config.Config, logger *slog.Logger, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: chatbotd audit verify [--organization ID] | audit prune [--days N] [--export FILE]")
	}
	switch args[0] {
	case "verify":
		return m.auditVerify(ctx, cfg, logger, args[1:])
	case "prune":
		return m.auditPrune(ctx, cfg, logger, args[1:])
	default:
		return fmt.Errorf("unknown audit command %q (verify, prune)", args[0])
	}
}

// auditVerify recomputes the chains (one organization's, or every one's) and prints a
// report per chain as a JSON line. It fails when any chain is bad.
func (m *Main) auditVerify(ctx context.Context, cfg config.Config, logger *slog.Logger, args []string) error {
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	orgFlag := fs.String("organization", "", "verify one organization (its id); default: every chain")
	if err := fs.Parse(args); err != nil {
		return err
	}
	pool, err := openPool(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer pool.Close()
	key, err := chainKey(ctx, pool, logger, cfg.AuditSigningKey)
	if err != nil {
		return err
	}
	var orgs []uuid.UUID
	if *orgFlag != "" {
		id, err := uuid.Parse(*orgFlag)
		if err != nil {
			return fmt.Errorf("--organization: %w", err)
		}
		orgs = []uuid.UUID{id}
	} else {
		rows, err := pool.Query(ctx, `SELECT organization_id FROM audit_chain_heads ORDER BY organization_id`)
		if err != nil {
			return err
		}
		if orgs, err = pgx.CollectRows(rows, pgx.RowTo[uuid.UUID]); err != nil {
			return err
		}
	}
	enc := json.NewEncoder(m.Stdout)
	start := time.Now()
	var checked int64
	var bad int
	for _, org := range orgs {
		rep, err := events.VerifyChain(ctx, pool, org, key)
		if err != nil {
			return fmt.Errorf("verify %s: %w", org, err)
		}
		checked += rep.Checked
		if !rep.OK {
			bad++
		}
		if err := enc.Encode(struct {
			OrganizationID uuid.UUID `json:"organization_id"`
			events.VerifyReport
		}{org, rep}); err != nil {
			return err
		}
	}
	took := time.Since(start)
	fmt.Fprintf(m.Stderr, "verified %d chains, %d events in %s (%.0f events/s): %d bad\n", len(orgs), checked,
		took.Round(time.Millisecond), float64(checked)/max(took.Seconds(), 1e-9), bad)
	if bad > 0 {
		return fmt.Errorf("%d of %d chains do not match the history", bad, len(orgs))
	}
	return nil
}

// auditPrune removes audit entries older than the retention from the read model, after
// writing them to --export when given. Export and delete share one snapshot, so exactly
// the exported entries are removed. The event log keeps every event; `projections
// rebuild audit --restore-pruned` brings the entries back.
func (m *Main) auditPrune(ctx context.Context, cfg config.Config, logger *slog.Logger, args []string) error {
	fs := flag.NewFlagSet("audit prune", flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	days := fs.Int("days", cfg.AuditRetentionDays, "keep this many days of entries (default AUDIT_RETENTION_DAYS)")
	export := fs.String("export", "", "write the pruned entries to this file first, as NDJSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *days <= 0 {
		return errors.New("nothing to prune: give --days N or set AUDIT_RETENTION_DAYS")
	}
	before := time.Now().UTC().Add(-time.Duration(*days) * 24 * time.Hour)
	pool, err := openPool(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer pool.Close()
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var exported int64
	if *export != "" {
		if exported, err = exportOld(ctx, tx, before, *export); err != nil {
			return err
		}
	}
	tag, err := tx.Exec(ctx, `DELETE FROM audit_entries WHERE occurred_at < $1`, before)
	if err != nil {
		return err
	}
	if *export != "" && tag.RowsAffected() != exported {
		return fmt.Errorf("exported %d entries but %d match: nothing pruned", exported, tag.RowsAffected())
	}
	if _, err := tx.Exec(ctx, `INSERT INTO audit_prunes (before, entries) VALUES ($1, $2)`, before, tag.RowsAffected()); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	fmt.Fprintf(m.Stderr, "pruned %d audit entries that occurred before %s\n", tag.RowsAffected(), before.Format(time.RFC3339))
	return nil
}

func exportOld(ctx context.Context, tx pgx.Tx, before time.Time, path string) (int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, fmt.Errorf("--export: %w", err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	enc := json.NewEncoder(w)
	var n int64
	var after int64 = -1
	for {
		rows, err := tx.Query(ctx, `SELECT `+events.AuditColumns+` FROM audit_entries WHERE occurred_at < $1 AND position > $2
			ORDER BY position LIMIT 5000`, before, after)
		if err != nil {
			f.Close()
			return n, err
		}
		page, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (events.AuditEntry, error) { return events.ScanAuditEntry(r) })
		if err != nil {
			f.Close()
			return n, err
		}
		for _, a := range page {
			if err := enc.Encode(a); err != nil {
				f.Close()
				return n, err
			}
		}
		n += int64(len(page))
		if len(page) < 5000 {
			break
		}
		after = page[len(page)-1].Position
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return n, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return n, err
	}
	return n, f.Close()
}

// replay writes the event log to stdout as NDJSON envelopes, in commit order.
func (m *Main) replay(ctx context.Context, cfg config.Config, logger *slog.Logger, args []string) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	orgFlag := fs.String("organization", "", `one organization's events (its id, or "none" for events of no organization); default: all`)
	stream := fs.String("stream", "", "one stream's events (its id)")
	types := fs.String("type", "", "event types, comma-separated")
	from := fs.String("from", "", "events that occurred at or after this RFC 3339 time")
	to := fs.String("to", "", "events that occurred before this RFC 3339 time")
	after := fs.Int64("after", 0, "resume after the event at this position")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var f events.HistoryFilter
	switch *orgFlag {
	case "":
	case "none":
		f.NoOrganization = true
	default:
		id, err := uuid.Parse(*orgFlag)
		if err != nil {
			return fmt.Errorf("--organization: %w", err)
		}
		f.Organization = &id
	}
	if *stream != "" {
		id, err := uuid.Parse(*stream)
		if err != nil {
			return fmt.Errorf("--stream: %w", err)
		}
		f.StreamID = &id
	}
	if *types != "" {
		for _, t := range strings.Split(*types, ",") {
			t = strings.TrimSpace(t)
			if _, ok := events.SchemaVersionOf(t); !ok {
				return fmt.Errorf("--type: %q is not an event type", t)
			}
			f.Types = append(f.Types, t)
		}
	}
	for _, tf := range []struct {
		flag string
		raw  string
		dst  **time.Time
	}{{"--from", *from, &f.From}, {"--to", *to, &f.To}} {
		if tf.raw == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, tf.raw)
		if err != nil {
			return fmt.Errorf("%s: %w", tf.flag, err)
		}
		*tf.dst = &t
	}
	pool, err := openPool(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer pool.Close()
	var cp events.Checkpoint
	if *after > 0 {
		if cp, err = events.ResumeAfter(ctx, pool, *after, nil); err != nil {
			return fmt.Errorf("--after: %w", err)
		}
	}
	w := bufio.NewWriterSize(m.Stdout, 1<<20)
	enc := json.NewEncoder(w)
	var n int64
	for {
		batch, next, err := events.ReadHistory(ctx, pool, f, cp, 5000)
		if err != nil {
			return err
		}
		for _, e := range batch {
			if err := enc.Encode(e); err != nil {
				return err
			}
		}
		n += int64(len(batch))
		if len(batch) < 5000 {
			break
		}
		cp = next
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(m.Stderr, "replayed %d events\n", n)
	return nil
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
