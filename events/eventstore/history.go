package eventstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/db"
)

// HistoryFilter selects events of the log for a replay. Zero fields select everything.
type HistoryFilter struct {
	// Organization limits the replay to one organization's events; NoOrganization to
	// events of no organization (failed logins of unknown emails, for instance).
	Organization   *uuid.UUID
	NoOrganization bool
	StreamID       *uuid.UUID
	Types          []string
	// TypePatterns are AMQP topic patterns ("chatbot.*", "#"): a projector's bindings.
	TypePatterns []string
	From, To     *time.Time // occurred_at >= From, < To
}

// ErrUnknownPosition is returned when a resume position is not an event the filter's
// organization can see.
var ErrUnknownPosition = errors.New("no such position in this history")

// ResumeAfter returns the place in commit order of the event at position, which must
// belong to org when org is set.
func ResumeAfter(ctx context.Context, q Querier, position int64, org *uuid.UUID) (Checkpoint, error) {
	var txid string
	var owner *uuid.UUID
	err := q.QueryRow(ctx, `SELECT transaction_id::text, organization_id FROM events WHERE position = $1`, position).Scan(&txid, &owner)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && org != nil && (owner == nil || *owner != *org)) {
		return Checkpoint{}, ErrUnknownPosition
	}
	if err != nil {
		return Checkpoint{}, db.Classify(err)
	}
	x, err := strconv.ParseUint(txid, 10, 64)
	return Checkpoint{TransactionID: x, Position: position}, err
}

// where renders the filter's conditions; args continues the arguments already taken.
func (f HistoryFilter) where(args []any) ([]string, []any) {
	var where []string
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	switch {
	case f.Organization != nil:
		add("organization_id = $%d", *f.Organization)
	case f.NoOrganization:
		where = append(where, "organization_id IS NULL")
	}
	if f.StreamID != nil {
		add("stream_id = $%d", *f.StreamID)
	}
	if len(f.Types) > 0 {
		add("type = ANY($%d)", f.Types)
	}
	if len(f.TypePatterns) > 0 {
		if res, all := events.TopicRegexps(f.TypePatterns); !all {
			add("type ~ ANY($%d)", res)
		}
	}
	if f.From != nil {
		add("occurred_at >= $%d", *f.From)
	}
	if f.To != nil {
		add("occurred_at < $%d", *f.To)
	}
	return where, args
}

// readable is the condition of an event that every reader in commit order may take: its
// transaction is older than every transaction of this database still running that may
// append events, so none that commits later can come before it.
//
// The statement's snapshot lists the transactions running when it was taken
// (pg_snapshot_xip); their least, or the snapshot's xmax when none runs, was the
// horizon, pg_snapshot_xmin. Two kinds of running transaction are left out of it:
//
//   - those that pg_stat_activity shows running in another database. The list is the
//     whole server's: a transaction left open in another database (an idle session of
//     another application, another deployment's long rebuild) held every reader here
//     back for as long as it ran, the relay included. A backend is connected to one
//     database for its life, so a transaction id it holds belongs to that database and
//     cannot have written these rows;
//   - those marked as never appending (NeverAppends): the projectors' group batches,
//     the settler's flush, the relay's checkpoint, the chainer's links. The group's
//     batches ran back to back under load, 10 to 20 ms each, and every append that
//     began during one was read only after it committed. The mark and the transaction id are
//     matched in one read of pg_locks, which the lock manager gives as one consistent
//     picture: the transaction's own id (its ExclusiveLock on it) and the mark held by
//     the same virtual transaction. A transaction can take the mark only before it has
//     written anything, and a marked one cannot insert into events (NeverAppends), so
//     no event of a transaction left out is ever skipped.
//
// Either is safe whenever it is read: a transaction whose database or mark cannot be
// told (it has ended since the snapshot, it is prepared, or its backend is another
// role's and hidden) still counts. The ids are matched on their low 32 bits
// (pg_stat_activity's and pg_locks' xid): the running ids are within 2^31 of each other,
// so no two share them.
var readable = fmt.Sprintf(`transaction_id < (SELECT least(pg_snapshot_xmax(snap), (SELECT min(id) FROM pg_snapshot_xip(snap) AS x(id)
		WHERE (id::text::bigint %% 4294967296) NOT IN (SELECT backend_xid::text::bigint FROM pg_stat_activity
			WHERE backend_xid IS NOT NULL AND datid <> (SELECT oid FROM pg_database WHERE datname = current_database()))
		AND (id::text::bigint %% 4294967296) NOT IN (WITH l AS MATERIALIZED (SELECT locktype, mode, granted, virtualtransaction,
				transactionid, database, classid, objid, objsubid FROM pg_locks)
			SELECT t.transactionid::text::bigint FROM l AS t JOIN l AS m USING (virtualtransaction)
			WHERE t.locktype = 'transactionid' AND t.mode = 'ExclusiveLock' AND t.granted
				AND m.locktype = 'advisory' AND m.granted AND m.objsubid = 1 AND m.classid::bigint = %d AND m.objid::bigint = %d
				AND m.database = (SELECT oid FROM pg_database WHERE datname = current_database()))))
	FROM (SELECT pg_current_snapshot() AS snap) AS s)`, uint64(neverAppendsKey)>>32, uint64(neverAppendsKey)&0xffffffff)

// neverAppendsKey is the advisory lock that marks a transaction as never appending.
var neverAppendsKey = db.LockKey("chatbotd.transaction-never-appends")

// NeverAppends is an expression (for a SELECT list) that marks the transaction it runs
// in as one that never appends events, so that readers in commit order (the relay) do
// not wait for it (see readable). It fails in a transaction that has written anything,
// and a marked transaction fails to insert into events (migration 00023). Its one
// parameter, $1, is NeverAppendsArgs.
const NeverAppends = `chatbotd_never_appends($1)`

// NeverAppendsArgs are NeverAppends' arguments.
func NeverAppendsArgs() []any { return []any{neverAppendsKey} }

// CountHistory counts the events matching f that are readable now.
func CountHistory(ctx context.Context, q Querier, f HistoryFilter) (int64, error) {
	where, args := f.where(nil)
	where = append(where, readable)
	var n int64
	err := q.QueryRow(ctx, `SELECT count(*) FROM events WHERE `+strings.Join(where, " AND "), args...).Scan(&n)
	return n, db.Classify(err)
}

// historyQuery is ReadHistory's statement. The transaction id is selected under an
// alias: unaliased, the cast would take the column's name, ORDER BY would sort by the
// cast instead of the index, and every read would scan and sort the whole log.
func historyQuery(f HistoryFilter, cp Checkpoint, limit int) (string, []any) {
	where, args := f.where([]any{strconv.FormatUint(cp.TransactionID, 10), cp.Position})
	where = append(where, `(transaction_id, position) > ($1::text::xid8, $2::bigint)`, readable)
	args = append(args, limit)
	return `SELECT ` + envelopeColumns + `, transaction_id::text::bigint AS txid FROM events
		WHERE ` + strings.Join(where, " AND ") + ` ORDER BY transaction_id, position LIMIT $` + strconv.Itoa(len(args)), args
}

// ReadHistory returns up to limit events matching f after cp, in commit order (the order
// the relay publishes), only from transactions older than every running one: a replay
// resumed from the last event it returned never misses an event that commits later.
func ReadHistory(ctx context.Context, q Querier, f HistoryFilter, cp Checkpoint, limit int) ([]events.Envelope, Checkpoint, error) {
	sql, args := historyQuery(f, cp, limit)
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, cp, db.Classify(err)
	}
	read, err := pgx.CollectRows(rows, scanCommitted)
	if err != nil {
		return nil, cp, db.Classify(err)
	}
	out, next := inCommitOrder(read, cp)
	return out, next, nil
}

// committed is an event read in commit order, with its transaction id.
type committed struct {
	e    events.Envelope
	txid int64
}

// scanCommitted scans a row of historyQuery.
func scanCommitted(r pgx.CollectableRow) (committed, error) {
	var c committed
	var err error
	c.e, err = scanEnvelope(r, &c.txid)
	return c, err
}

// inCommitOrder returns the events read, and the checkpoint of the last one (cp when
// none were).
func inCommitOrder(read []committed, cp Checkpoint) ([]events.Envelope, Checkpoint) {
	var out []events.Envelope
	if len(read) > 0 {
		out = make([]events.Envelope, len(read))
	}
	for i, c := range read {
		out[i] = c.e
		cp = Checkpoint{TransactionID: uint64(c.txid), Position: c.e.Position}
	}
	return out, cp
}
