package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
)

// floor is the least a pipeline behind the bare handler's POST /crud/chatbots can do and
// still give what chatbotd's API promises of a command: the chatbot in a read model that
// the query side lists and searches, and an audit entry that the audit log filters.
// After the bare handler's insert has answered, one goroutine writes both rows in
// batches (one transaction each, rows by unnest) into copies of chatbots and
// audit_entries with every index of theirs. Nothing else: no event log, broker, relay,
// stream versions, hash chain or cache, each of which is chatbotd's work beyond this
// floor. The ratio of the bare handler with its floor to the bare handler alone is about
// the most that a design writing those two rows on the same cores can reach (a ratio of
// one run: it moves with the machine, as every figure here).
type floor struct {
	pool    *pgxpool.Pool
	org     uuid.UUID
	in      chan floorRow
	pending atomic.Int64
	failed  atomic.Pointer[error]
}

// floorRow is one command's chatbot, to be projected.
type floorRow struct {
	id                uuid.UUID
	name, description string
	at                time.Time
}

// floorBatch is the most rows one transaction of the floor writes: the projector
// runtime's own default. serve's projectors take up to PROJECTOR_BATCH_SIZE (500) since
// the twenty-eighth pass; the floor was kept at 200, so its figures stay comparable with
// the earlier passes' (a larger batch would only make the floor cheaper).
const floorBatch = 200

func startFloor(ctx context.Context, pool *pgxpool.Pool, org uuid.UUID) (*floor, error) {
	if _, err := pool.Exec(ctx, `DROP TABLE IF EXISTS floor_chatbots, floor_audit;
		CREATE TABLE floor_chatbots (LIKE chatbots INCLUDING ALL);
		CREATE TABLE floor_audit (LIKE audit_entries INCLUDING ALL)`); err != nil {
		return nil, err
	}
	f := &floor{pool: pool, org: org, in: make(chan floorRow, 1<<16)}
	go f.run(ctx)
	return f, nil
}

// add queues a command's row; a full queue holds the handler back, as a pipeline that
// cannot keep up must.
func (f *floor) add(r floorRow) {
	f.pending.Add(1)
	f.in <- r
}

func (f *floor) run(ctx context.Context) {
	var position int64
	batch := make([]floorRow, 0, floorBatch)
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-f.in:
			batch = append(batch[:0], r)
		}
	more:
		for len(batch) < floorBatch {
			select {
			case r := <-f.in:
				batch = append(batch, r)
			default:
				break more
			}
		}
		if err := f.write(ctx, batch, position); err != nil {
			f.failed.Store(&err)
		}
		position += int64(len(batch))
		f.pending.Add(-int64(len(batch)))
	}
}

// write projects a batch in one transaction: the read model's rows, then the audit
// entries, each with one INSERT of the batch's arrays (chatbotd's projectors write theirs
// the same way).
func (f *floor) write(ctx context.Context, batch []floorRow, position int64) error {
	n := len(batch)
	ids, entries := make([]uuid.UUID, n), make([]uuid.UUID, n)
	names, descriptions := make([]string, n), make([]string, n)
	positions, requests := make([]int64, n), make([]string, n)
	times := make([]time.Time, n)
	for i, r := range batch {
		ids[i], entries[i], names[i], descriptions[i], times[i] = r.id, uuid.Must(uuid.NewV7()), r.name, r.description, r.at
		positions[i] = position + int64(i) + 1
		requests[i] = uuid.Must(uuid.NewV7()).String() // a request id of its own, as every command has
	}
	tx, err := f.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `INSERT INTO floor_chatbots (id, organization_id, name, description, welcome_message,
			fallback_message, status, responder, version, created_at, updated_at)
		SELECT u.id, $5, u.name, u.description, '', 'Sorry, I do not know.', 'draft', '{"type":"knowledge_base"}', 1, u.at, u.at
		FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[]) AS u(id, name, description, at)`,
		ids, names, descriptions, times, f.org); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO floor_audit (id, position, organization_id, action, actor_type, actor_id,
			subject_type, subject_id, request_id, correlation_id, causation_id, ip_address, user_agent, changes, occurred_at)
		SELECT u.id, u.position, $6, 'chatbot.created', 'user', $6, 'chatbot', u.subject, u.request, u.request, '',
			'127.0.0.1', 'bombardier', jsonb_build_object('name', u.name), u.at
		FROM unnest($1::uuid[], $2::bigint[], $3::uuid[], $4::text[], $5::timestamptz[], $7::text[])
			AS u(id, position, subject, request, at, name)`,
		entries, positions, ids, requests, times, f.org, names); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// drain waits until every queued row is written, and reports a failed write.
func (f *floor) drain(ctx context.Context) error {
	for f.pending.Load() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	if err := f.failed.Load(); err != nil {
		return fmt.Errorf("the floor's projection: %w", *err)
	}
	return nil
}
