package eventstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/db"
	"github.com/chatbotsaas/chatbotd/internal/metrics"
)

// AnyVersion as an expected version appends after whatever the stream holds.
const AnyVersion = -1

// NotifyChannel is the LISTEN/NOTIFY channel that wakes the relay after an append commits.
const NotifyChannel = "chatbot_events"

// AppendRequest is one command's write: events for one stream, at an expected version,
// plus any rows that must commit or fail with them (reservations, credentials).
type AppendRequest struct {
	StreamType      string
	StreamID        uuid.UUID
	ExpectedVersion int // AnyVersion, 0 for "must not exist", or the current version
	OrganizationID  *uuid.UUID
	Events          []events.Event
	// EventIDs, when set, name the events (one per event). Appending ids that are
	// already stored is a no-op that returns the stored result: a retried command with
	// deterministic ids appends once.
	EventIDs []uuid.UUID
	Meta     events.Meta
	// More are other streams' events appended in the same transaction (their Meta and
	// Also are not used); each has its own expected version check. Only the first
	// stream's version is read before the transaction id is taken, so More is for new
	// streams (expected version 0), whose order nothing else can disturb.
	More []AppendRequest
	// Also runs in the append's transaction after the events are inserted.
	Also func(ctx context.Context, tx pgx.Tx) error
}

// Store is the PostgreSQL event store. It is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
	now  func() time.Time

	// NOTIFY inside a transaction serializes every committing appender on PostgreSQL's
	// notification queue lock, so appends wake the relay after commit instead, through one
	// goroutine that coalesces any number of commits into one pg_notify.
	wake      chan struct{}
	startOnce sync.Once
	// here is the wake-up of this process's relay while it leads (RelayConfig.Local):
	// commits are told there instead of by a NOTIFY, which PostgreSQL signals to every
	// connection LISTENing in the database, whatever its channel.
	here    atomic.Pointer[chan struct{}]
	stop    context.CancelFunc
	stopped chan struct{}

	metrics *metrics.Metrics

	// Group commit (groupcommit.go): appends in flight, and the committers' queue. It is
	// unbuffered: an append is handed over only to a committer, which always answers, so
	// none is stranded when the store closes.
	inflight  atomic.Int64
	groups    chan *groupedAppend
	groupOnce sync.Once
	noGroups  bool
}

// DisableGroupCommit makes every append a transaction of its own (benchmarks compare the
// two); call it before the store is used.
func (s *Store) DisableGroupCommit() { s.noGroups = true }

// Instrument counts the store's appends in m (set once, before the store is used).
func (s *Store) Instrument(m *metrics.Metrics) { s.metrics = m }

// appended counts the events of a committed append.
func (s *Store) appended(reqs ...AppendRequest) {
	if s.metrics == nil {
		return
	}
	for _, r := range reqs {
		for _, e := range r.Events {
			s.metrics.EventsAppended(e.EventType(), 1)
		}
		s.appended(r.More...)
	}
}

// NewStore returns a store over pool.
func NewStore(pool *pgxpool.Pool) *Store {
	// PostgreSQL keeps microseconds: stamping with that precision makes the time a
	// command answers with equal to the one every read model shows.
	return &Store{pool: pool, now: func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) },
		wake: make(chan struct{}, 1), stopped: make(chan struct{}), groups: make(chan *groupedAppend)}
}

// Close stops the store's notifier, after a last notification.
func (s *Store) Close() {
	s.startOnce.Do(func() { close(s.stopped) })
	if s.stop != nil {
		s.stop()
		<-s.stopped
	}
}

// wakeHere makes the store wake ch on each commit instead of sending a NOTIFY (nil: the
// NOTIFY again).
func (s *Store) wakeHere(ch chan struct{}) {
	if ch == nil {
		s.here.Store(nil)
		return
	}
	s.here.Store(&ch)
}

// notify tells the relay that events were committed. It never blocks the appender.
func (s *Store) notify() {
	if here := s.here.Load(); here != nil {
		select {
		case *here <- struct{}{}:
		default: // a wake-up is pending already and will cover this commit
		}
		return
	}
	s.startOnce.Do(func() {
		ctx, cancel := context.WithCancel(context.Background())
		s.stop = cancel
		go s.notifier(ctx)
	})
	select {
	case s.wake <- struct{}{}:
	default: // a notification is pending already and will cover this commit
	}
}

func (s *Store) notifier(ctx context.Context) {
	defer close(s.stopped)
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		// A failed NOTIFY costs latency, not events: the relay also polls.
		_, _ = s.pool.Exec(ctx, `SELECT pg_notify($1, '')`, NotifyChannel)
	}
}

// Pool is the primary pool the store writes to.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

const maxAnyVersionRetries = 8

// Append writes the events in one transaction, checking the expected version. A stale
// expected version gives apperr CONFLICT; with AnyVersion a concurrent writer is retried
// a bounded number of times.
func (s *Store) Append(ctx context.Context, req AppendRequest) (events.AppendResult, error) {
	if !s.noGroups && req.Also == nil && len(req.More) == 0 && req.ExpectedVersion != AnyVersion {
		busy := s.inflight.Add(1) > 1
		defer s.inflight.Add(-1)
		if busy {
			if res, ok, err := s.grouped(ctx, req); ok {
				return res, err
			}
		}
	}
	for attempt := 0; ; attempt++ {
		res, err := s.appendOnce(ctx, req)
		if err == nil {
			return res, nil
		}
		if db.IsUniqueViolation(err, "events_id_key") && req.EventIDs != nil {
			return s.resultOf(ctx, req)
		}
		if db.IsUniqueViolation(err, "events_stream_version_key") {
			if req.ExpectedVersion == AnyVersion && attempt < maxAnyVersionRetries {
				continue
			}
			return events.AppendResult{}, apperr.Conflict("the resource was changed by another request")
		}
		return events.AppendResult{}, db.Classify(err)
	}
}

func (s *Store) appendOnce(ctx context.Context, req AppendRequest) (res events.AppendResult, err error) {
	meta, err := events.EncodeMetadata(req.Meta.Metadata)
	if err != nil {
		return res, err
	}
	res = events.AppendResult{StreamType: req.StreamType, StreamID: req.StreamID, OccurredAt: s.now()}
	if req.Also == nil && len(req.More) == 0 && req.ExpectedVersion != AnyVersion {
		// One statement is its own transaction: one round trip, like a plain INSERT.
		res.Version, res.Position, err = s.insertStream(ctx, s.pool, req, req.Meta, meta, res.OccurredAt)
		if errors.Is(err, errAlreadyAppended) {
			return s.resultOf(ctx, req)
		}
		if err == nil {
			s.notify()
			s.appended(req)
		}
		return res, err
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return res, err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	if req.ExpectedVersion == AnyVersion {
		// Writers that accept any version queue on the stream instead of racing for it.
		// The lock assigns no transaction id (see insertStream).
		if _, err = tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))`, req.StreamID); err != nil {
			return res, err
		}
	}
	for i, w := range append([]AppendRequest{req}, req.More...) {
		version, last, ierr := s.insertStream(ctx, tx, w, req.Meta, meta, res.OccurredAt)
		if ierr != nil {
			if errors.Is(ierr, errAlreadyAppended) {
				_ = tx.Rollback(ctx)
				return s.resultOf(ctx, req)
			}
			return res, ierr
		}
		if i == 0 {
			res.Version = version
		}
		res.Position = max(res.Position, last)
	}
	if req.Also != nil {
		if err = req.Also(ctx, tx); err != nil {
			return res, err
		}
	}
	if err = tx.Commit(ctx); err != nil {
		return res, err
	}
	s.notify()
	s.appended(req)
	return res, nil
}

var errAlreadyAppended = errors.New("events already appended")

// AppendTx appends one stream's events inside the caller's transaction, for a consumer
// whose own writes and the events it decides must commit together (exactly once). The
// expected version must be exact (not AnyVersion), and the caller commits; the relay is
// woken when the store's next append commits, or by its poll.
func (s *Store) AppendTx(ctx context.Context, tx pgx.Tx, req AppendRequest) (events.AppendResult, error) {
	if req.ExpectedVersion == AnyVersion || req.Also != nil || len(req.More) > 0 {
		return events.AppendResult{}, errors.New("AppendTx takes one stream at an exact expected version")
	}
	meta, err := events.EncodeMetadata(req.Meta.Metadata)
	if err != nil {
		return events.AppendResult{}, err
	}
	res := events.AppendResult{StreamType: req.StreamType, StreamID: req.StreamID, OccurredAt: s.now()}
	res.Version, res.Position, err = s.insertStream(ctx, tx, req, req.Meta, meta, res.OccurredAt)
	if err == nil {
		// Counted when inserted: the caller's commit is out of sight (a rollback is rare).
		s.appended(req)
	}
	return res, err
}

// Notify wakes the relay (after a transaction that used AppendTx committed).
func (s *Store) Notify() { s.notify() }

// encoded are one append's events ready for the INSERT's arrays.
type encoded struct {
	ids     []uuid.UUID
	types   []string
	schemas []int32
	datas   []string
}

// encodeEvents checks the events of one stream against the catalog and encodes them.
func encodeEvents(req AppendRequest) (encoded, error) {
	if len(req.Events) == 0 {
		return encoded{}, errors.New("append: no events")
	}
	if req.EventIDs != nil && len(req.EventIDs) != len(req.Events) {
		return encoded{}, errors.New("append: one event id per event")
	}
	n := len(req.Events)
	e := encoded{ids: make([]uuid.UUID, n), types: make([]string, n), schemas: make([]int32, n), datas: make([]string, n)}
	for i, ev := range req.Events {
		if req.EventIDs != nil {
			e.ids[i] = req.EventIDs[i]
		} else {
			e.ids[i] = uuid.Must(uuid.NewV7())
		}
		e.types[i] = ev.EventType()
		v, ok := events.SchemaVersionOf(e.types[i])
		if !ok {
			return encoded{}, fmt.Errorf("append: event type %q is not in the catalog", e.types[i])
		}
		if events.StreamTypeOf(e.types[i]) != req.StreamType {
			return encoded{}, fmt.Errorf("append: event %q does not belong to a %q stream", e.types[i], req.StreamType)
		}
		e.schemas[i] = int32(v)
		b, err := events.EncodeData(ev)
		if err != nil {
			return encoded{}, fmt.Errorf("append: encode %s: %w", e.types[i], err)
		}
		e.datas[i] = string(b)
	}
	return e, nil
}

// insertStream checks one stream's expected version and inserts its events in one
// statement, returning the stream's new version and the last position.
//
// The statement reads the stream's version from a snapshot taken before its insert
// assigns the transaction id, so that id comes after the commit of every event of the
// stream it saw; (transaction id, position) order therefore keeps each stream's order.
func (s *Store) insertStream(ctx context.Context, q Querier, req AppendRequest, m events.Meta, meta []byte, at time.Time) (int, int64, error) {
	enc, err := encodeEvents(req)
	if err != nil {
		return 0, 0, err
	}
	ids, types, schemas, datas := enc.ids, enc.types, enc.schemas, enc.datas
	rows, err := q.Query(ctx, `
		WITH cur AS (SELECT coalesce(max(stream_version), 0) AS v FROM events WHERE stream_id = $3)
		INSERT INTO events (id, stream_type, stream_id, stream_version, type, schema_version,
			organization_id, actor_type, actor_id, correlation_id, causation_id, request_id,
			metadata, data, occurred_at)
		SELECT u.id, $2, $3, cur.v + u.ord::int, u.type, u.schema, $4, $5, $6, $7, $8, $9, $10, u.data::jsonb, $11
		FROM cur, unnest($1::uuid[], $13::text[], $14::int[], $15::text[])
			WITH ORDINALITY AS u(id, type, schema, data, ord)
		WHERE $12::int < 0 OR cur.v = $12::int
		ORDER BY u.ord
		RETURNING position, stream_version`,
		ids, req.StreamType, req.StreamID, req.OrganizationID, m.Actor.Type, m.Actor.ID,
		m.CorrelationID, m.CausationID, m.RequestID, meta, at,
		req.ExpectedVersion, types, schemas, datas)
	if err != nil {
		return 0, 0, err
	}
	var last int64
	var version int
	for rows.Next() {
		var p int64
		var v int
		if err := rows.Scan(&p, &v); err != nil {
			rows.Close()
			return 0, 0, err
		}
		last, version = max(last, p), max(version, v)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, 0, err
	}
	if version > 0 {
		return version, last, nil
	}
	// Nothing inserted: the expected version was stale, or this is a retry of an append
	// that already happened.
	if req.EventIDs != nil {
		var found int
		if err := q.QueryRow(ctx, `SELECT count(*) FROM events WHERE id = ANY($1)`, req.EventIDs).Scan(&found); err != nil {
			return 0, 0, err
		}
		if found > 0 {
			return 0, 0, errAlreadyAppended
		}
	}
	var current int
	if err := q.QueryRow(ctx, `SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = $1`, req.StreamID).Scan(&current); err != nil {
		return 0, 0, err
	}
	return 0, 0, apperr.Conflict(fmt.Sprintf("expected version %d, but the resource is at version %d", req.ExpectedVersion, current))
}

// resultOf answers a repeated append of already stored event ids.
func (s *Store) resultOf(ctx context.Context, req AppendRequest) (events.AppendResult, error) {
	res := events.AppendResult{StreamType: req.StreamType, StreamID: req.StreamID}
	err := s.pool.QueryRow(ctx, `SELECT max(stream_version), max(position), max(occurred_at) FROM events
		WHERE id = ANY($1) AND stream_id = $2`, req.EventIDs, req.StreamID).Scan(&res.Version, &res.Position, &res.OccurredAt)
	res.OccurredAt = res.OccurredAt.UTC()
	if err != nil {
		return res, db.Classify(err)
	}
	return res, nil
}

const envelopeColumns = `id, type, schema_version, stream_type, stream_id, stream_version, position,
	organization_id, occurred_at, actor_type, actor_id, correlation_id, causation_id, request_id, metadata, data`

// scanEnvelope reads one row selected with envelopeColumns, then any extra columns.
func scanEnvelope(row pgx.Row, extra ...any) (events.Envelope, error) {
	var e events.Envelope
	var meta, data []byte
	// Sized for the extra columns too: appended to a literal of its own length, the slice
	// was allocated twice for every event read (the relay and the chainer read them all).
	dest := append(make([]any, 0, 16+len(extra)), &e.ID, &e.Type, &e.SchemaVersion, &e.StreamType, &e.StreamID,
		&e.StreamVersion, &e.Position, &e.OrganizationID, &e.OccurredAt, &e.Actor.Type, &e.Actor.ID, &e.CorrelationID,
		&e.CausationID, &e.RequestID, &meta, &data)
	dest = append(dest, extra...)
	err := row.Scan(dest...)
	if err != nil {
		return e, err
	}
	e.OccurredAt = e.OccurredAt.UTC()
	e.Data = data
	e.KeepStoredMetadata(meta)
	if len(meta) > 0 {
		if err := events.DecodeMetadata(meta, &e.Metadata); err != nil {
			return e, fmt.Errorf("event %s metadata: %w", e.ID, err)
		}
	}
	return events.Upcast(e)
}

// Querier is a pool or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// ReadStream returns a stream's events with from <= version <= to (to 0: to the end).
func (s *Store) ReadStream(ctx context.Context, streamID uuid.UUID, from, to int) ([]events.Envelope, error) {
	return ReadStream(ctx, s.pool, streamID, from, to)
}

// ReadStream is Store.ReadStream on any querier (e.g. a projector's transaction).
func ReadStream(ctx context.Context, q Querier, streamID uuid.UUID, from, to int) ([]events.Envelope, error) {
	if to <= 0 {
		to = 1<<31 - 1
	}
	rows, err := q.Query(ctx, `SELECT `+envelopeColumns+` FROM events
		WHERE stream_id = $1 AND stream_version BETWEEN $2 AND $3 ORDER BY stream_version`, streamID, from, to)
	if err != nil {
		return nil, db.Classify(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (events.Envelope, error) { return scanEnvelope(r) })
	return out, db.Classify(err)
}

// ReadStreamBefore returns the events of a stream in version order, and for each whether
// it comes before the event before in commit order (the relay's: transaction id, then
// position). Once before has been published every event of the stream before it has
// committed, and none that commits later can come before it: two readers at different
// times tell the same events apart, where the stream as it is now can differ between
// them.
func ReadStreamBefore(ctx context.Context, q Querier, streamID, before uuid.UUID) ([]events.Envelope, []bool, error) {
	rows, err := q.Query(ctx, `SELECT `+envelopeColumns+`,
			(transaction_id, position) < (SELECT transaction_id, position FROM events WHERE id = $2) IS TRUE
		FROM events WHERE stream_id = $1 ORDER BY stream_version`, streamID, before)
	if err != nil {
		return nil, nil, db.Classify(err)
	}
	defer rows.Close()
	var envs []events.Envelope
	var earlier []bool
	for rows.Next() {
		var b bool
		e, err := scanEnvelope(rows, &b)
		if err != nil {
			return nil, nil, db.Classify(err)
		}
		envs, earlier = append(envs, e), append(earlier, b)
	}
	return envs, earlier, db.Classify(rows.Err())
}

// Checkpoint is a place in commit order: (transaction id, position).
type Checkpoint struct {
	TransactionID uint64 `json:"transaction_id"`
	Position      int64  `json:"position"`
}

// ReadCommitted returns up to limit events after cp in commit order, only from
// transactions that are older than every transaction still running, so that no event
// can later appear before the last one returned. It also returns the checkpoint of the
// last event returned (cp when none).
//
// It is ReadHistory without a filter, run with a generic plan (db.QueryGeneric): the
// relay and the chainer read at every batch, and the plan, an index scan in commit
// order, does not depend on where they are. In a transaction, the generic plans stay in
// force until it ends.
func ReadCommitted(ctx context.Context, q db.Batcher, cp Checkpoint, limit int) ([]events.Envelope, Checkpoint, error) {
	sql, args := historyQuery(HistoryFilter{}, cp, limit)
	read, err := db.QueryGeneric(ctx, q, scanCommitted, sql, args...)
	if err != nil {
		return nil, cp, db.Classify(err)
	}
	out, next := inCommitOrder(read, cp)
	return out, next, nil
}
