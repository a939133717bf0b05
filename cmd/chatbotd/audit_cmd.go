package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/config"
)

// auditCommand is `chatbotd audit verify|prune`: check the hash chain, or trim the audit
// read model to its retention (the log itself is never pruned).
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
		rep, err := eventstore.VerifyChain(ctx, pool, org, key)
		if err != nil {
			return fmt.Errorf("verify %s: %w", org, err)
		}
		checked += rep.Checked
		if !rep.OK {
			bad++
		}
		if err := enc.Encode(struct {
			OrganizationID uuid.UUID `json:"organization_id"`
			eventstore.VerifyReport
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
		rows, err := tx.Query(ctx, `SELECT `+eventstore.AuditColumns+` FROM audit_entries WHERE occurred_at < $1 AND position > $2
			ORDER BY position LIMIT 5000`, before, after)
		if err != nil {
			f.Close()
			return n, err
		}
		page, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (events.AuditEntry, error) { return eventstore.ScanAuditEntry(r) })
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
