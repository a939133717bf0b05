package projections

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatbotsaas/chatbotd/internal/db"
	"github.com/chatbotsaas/chatbotd/internal/metrics"
)

// PendingLists merges the pending lists of the schema's GIN indexes (the chatbots' and
// the users' searches, the users' roles, the knowledge base's) into the indexes, every
// Interval, on a connection of its own.
//
// Why: a GIN index with fastupdate, PostgreSQL's default, takes new entries into a
// pending list, and the insert that finds the list past gin_pending_list_limit (4 MB)
// merges all of it into the index, inside its own transaction. For a projector that
// insert is one of the group's batches, and every read model waits behind it: merging the
// chatbots' search entries took 270–520 ms, once every 70,000 chatbots or so, and made
// the 2xx → read model's worst second (BENCHMARKS.md, issue 23's twentieth pass). Merged
// here every second, a list stays far below the limit at the rates commands come in (the
// chatbots' list took 14 pages a second at 1,900 chatbots a second), and no batch
// merges it: the same work, in bulk, beside the batches instead of inside one. A search
// reads the whole pending list too, so short lists keep searches fast. Turning fastupdate
// off instead made each insert into the users' trigram index three times as costly, and a
// small gin_pending_list_limit still merges inside the batches.
//
// A backlog (a projector catching up, a burst of sign-ups) can still fill a list between
// two passes; PostgreSQL then merges it in the insert as before, and an insert that finds
// a merge under way leaves the list to it instead of waiting. gin_clean_pending_list lets
// go of each index's lock as it returns, so a rebuild's swap, which drops the live
// tables' indexes, waits for one merge at most, never for the rest of a pass (checked:
// a swap dropped an index merged earlier in a pass that was waiting for another). A
// rebuild's fresh tables are in a schema of their own: their lists are left to
// PostgreSQL, in a bulk load where no batch waits.
type PendingLists struct {
	Pool *pgxpool.Pool
	// Interval is how often the lists are merged; 0 turns it off.
	Interval time.Duration
	Logger   *slog.Logger
	Metrics  *metrics.Metrics
}

// pendingListsLock is held, for a pass's transaction, by the process merging: the others
// skip the pass rather than wait behind it on each index's metapage.
var pendingListsLock = db.LockKey("chatbotd.gin-pending-lists")

// Run merges the lists every Interval until ctx ends. A pass that fails is tried at the
// next interval; without the privilege (gin_clean_pending_list is the index owner's and
// the superuser's), it stops, said once, and PostgreSQL merges in the inserts as it does
// by default.
func (p *PendingLists) Run(ctx context.Context) error {
	if p.Interval <= 0 {
		return nil
	}
	log := p.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := time.NewTicker(p.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		_, err := p.Merge(ctx)
		var pgErr *pgconn.PgError
		switch {
		case err == nil || ctx.Err() != nil:
		case errors.As(err, &pgErr) && pgErr.Code == "42501": // insufficient_privilege
			log.Warn("GIN pending lists not merged: the database user does not own the indexes; PostgreSQL merges them in the inserts",
				"error", err)
			return nil
		default:
			log.Warn("merging GIN pending lists failed: tried again at the next interval", "error", err)
		}
	}
}

// Merge merges each GIN index's pending list once, and returns the pages merged by index
// (none when another process holds the pass).
func (p *PendingLists) Merge(ctx context.Context) (map[string]int64, error) {
	// One statement, one transaction: the lock is taken before the first merge (a
	// volatile qual is evaluated for each row, and the lock is re-entrant).
	rows, err := p.Pool.Query(ctx, `SELECT c.relname::text, gin_clean_pending_list(c.oid)
		FROM pg_class c JOIN pg_am a ON a.oid = c.relam
		WHERE a.amname = 'gin' AND c.relkind = 'i' AND c.relnamespace = current_schema()::regnamespace
			AND pg_try_advisory_xact_lock($1)
		ORDER BY c.relname`, pendingListsLock)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	merged := map[string]int64{}
	for rows.Next() {
		var index string
		var pages int64
		if err := rows.Scan(&index, &pages); err != nil {
			return nil, err
		}
		merged[index] = pages
		p.Metrics.PendingMerged(index, pages)
	}
	return merged, rows.Err()
}
