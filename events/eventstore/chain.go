package eventstore

import (
	"context"
	"crypto/sha256"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/db"
	"github.com/chatbotsaas/chatbotd/internal/retry"
)

// The tamper-evidence chain. Every event is linked, in commit order (the relay's order),
// into its organization's chain:
//
//	event_hash = SHA-256 of the stored event (every column, data and metadata as stored)
//	hash       = SHA-256(previous hash ‖ event_hash ‖ seq ‖ position)
//	signature  = HMAC-SHA-256(key, organization ‖ seq ‖ position ‖ hash)
//
// Changing an event changes its event_hash; deleting one leaves a link without an event;
// reordering two changes both hashes; inserting one leaves an event without a link; and
// rewriting the links to match a changed history needs the key, which is in the
// configuration, not in the database.

// chainCheckpoint is the chainer's place in commit order, kept with the relay's.
const chainCheckpoint = "audit-chain"

var genesis = make([]byte, sha256.Size)

func chainOrg(e events.Envelope) uuid.UUID {
	if e.OrganizationID == nil {
		return uuid.Nil
	}
	return *e.OrganizationID
}

// Chainer links committed events into their organizations' chains. Any number may run:
// each batch is one transaction under a lock, so they take turns.
type Chainer struct {
	Pool      *pgxpool.Pool
	Key       events.ChainKey
	BatchSize int
	// Idle is how long it sleeps after a batch that was not full (200 ms when unset).
	Idle time.Duration
	// Tap, when set, holds what the relay of this process read (RelayConfig.Tap): the
	// events after the chain's checkpoint are taken from it when it has them.
	Tap    *Tap
	Logger *slog.Logger
}

// Run links events until ctx ends, retrying after failures.
func (c *Chainer) Run(ctx context.Context) error {
	if c.Idle <= 0 {
		c.Idle = 200 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	var pause retry.Backoff
	for ctx.Err() == nil {
		n, err := c.Step(ctx)
		wait := time.Duration(0)
		switch {
		case err != nil && ctx.Err() == nil:
			wait = pause.Next()
			c.Logger.Warn("audit chain interrupted, retrying", "error", err, "in", wait)
		case err == nil && n < c.batchSize():
			// Caught up: what commits meanwhile is linked in one step after the pause.
			// Linking each few events as they commit took a step (nine round trips, a
			// commit) for every thirty events at 1,433 commands a second. Nothing waits for
			// the links: `audit verify` checks the events up to the chain's checkpoint and
			// leaves the later ones to be linked.
			wait = c.Idle
			pause.Reset()
		}
		if wait > 0 {
			retry.Sleep(ctx.Done(), wait)
		}
	}
	return nil
}

func (c *Chainer) batchSize() int {
	if c.BatchSize <= 0 {
		return 2000
	}
	return c.BatchSize
}

// Step links the next batch of committed events and returns how many it linked.
func (c *Chainer) Step(ctx context.Context) (n int, err error) {
	size := c.batchSize()
	tx, err := c.Pool.Begin(ctx)
	if err != nil {
		return 0, db.Classify(err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	// It links, never appends: readers in commit order, the relay first, need not wait for
	// its transaction (NeverAppends), which holds an id from its first insert to its
	// commit, a flush to the disk.
	if _, err = tx.Exec(ctx, `SELECT `+NeverAppends+`, pg_advisory_xact_lock($2)`,
		append(NeverAppendsArgs(), db.LockKey("chatbotd."+chainCheckpoint))...); err != nil {
		return 0, db.Classify(err)
	}
	cp, err := loadCheckpoint(ctx, tx, chainCheckpoint)
	if err != nil {
		return 0, err
	}
	batch, next, tapped := c.Tap.take(cp, size)
	if !tapped {
		batch, next, err = ReadCommitted(ctx, tx, cp, size)
	}
	if err != nil || len(batch) == 0 {
		return 0, errors.Join(err, tx.Rollback(ctx))
	}
	orgs := map[uuid.UUID]bool{}
	for _, e := range batch {
		orgs[chainOrg(e)] = true
	}
	ids := make([]uuid.UUID, 0, len(orgs))
	for o := range orgs {
		ids = append(ids, o)
	}
	type head struct {
		seq  int64
		hash []byte
	}
	heads := make(map[uuid.UUID]head, len(ids))
	// Planned once per connection, like every statement after ReadCommitted in this
	// transaction (generic plans: see db.GenericPlans).
	rows, err := tx.Query(ctx, `SELECT organization_id, seq, hash FROM audit_chain_heads WHERE organization_id = ANY($1)`, ids)
	if err != nil {
		return 0, db.Classify(err)
	}
	for rows.Next() {
		var o uuid.UUID
		var h head
		if err = rows.Scan(&o, &h.seq, &h.hash); err != nil {
			rows.Close()
			return 0, err
		}
		heads[o] = h
	}
	rows.Close()
	if err = rows.Err(); err != nil {
		return 0, db.Classify(err)
	}
	n = len(batch)
	var (
		lOrg                       = make([]uuid.UUID, 0, n)
		lSeq, lPos                 = make([]int64, 0, n), make([]int64, 0, n)
		lEventHash, lHash, lSigned = make([][]byte, 0, n), make([][]byte, 0, n), make([][]byte, 0, n)
	)
	for _, e := range batch {
		o := chainOrg(e)
		h, ok := heads[o]
		if !ok {
			h = head{hash: genesis}
		}
		ev := events.EventHash(e)
		seq := h.seq + 1
		link := events.LinkHash(h.hash, ev, seq, e.Position)
		lOrg, lSeq, lPos = append(lOrg, o), append(lSeq, seq), append(lPos, e.Position)
		lEventHash, lHash, lSigned = append(lEventHash, ev), append(lHash, link), append(lSigned, c.Key.Sign(o, seq, e.Position, link))
		heads[o] = head{seq: seq, hash: link}
	}
	if _, err = tx.Exec(ctx, `INSERT INTO audit_chain (organization_id, seq, position, event_hash, hash, signature)
		SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::bytea[], $5::bytea[], $6::bytea[])`,
		lOrg, lSeq, lPos, lEventHash, lHash, lSigned); err != nil {
		return 0, db.Classify(err)
	}
	hOrg, hSeq, hHash := make([]uuid.UUID, 0, len(heads)), make([]int64, 0, len(heads)), make([][]byte, 0, len(heads))
	for o, h := range heads {
		hOrg, hSeq, hHash = append(hOrg, o), append(hSeq, h.seq), append(hHash, h.hash)
	}
	if _, err = tx.Exec(ctx, `INSERT INTO audit_chain_heads (organization_id, seq, hash)
		SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::bytea[])
		ON CONFLICT (organization_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash`, hOrg, hSeq, hHash); err != nil {
		return 0, db.Classify(err)
	}
	if err = saveCheckpoint(ctx, tx, chainCheckpoint, next); err != nil {
		return 0, err
	}
	return n, db.Classify(tx.Commit(ctx))
}

func loadCheckpoint(ctx context.Context, q Querier, name string) (Checkpoint, error) {
	var cp Checkpoint
	var txid string
	err := q.QueryRow(ctx, `SELECT transaction_id::text, position FROM relay_checkpoints WHERE name = $1`, name).Scan(&txid, &cp.Position)
	if errors.Is(err, pgx.ErrNoRows) {
		return Checkpoint{}, nil
	}
	if err != nil {
		return cp, db.Classify(err)
	}
	cp.TransactionID, err = strconv.ParseUint(txid, 10, 64)
	return cp, err
}

// execer is a pool or a transaction.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

const saveCheckpointSQL = `INSERT INTO relay_checkpoints (name, transaction_id, position, updated_at)
		VALUES ($1, $2::text::xid8, $3, now())
		ON CONFLICT (name) DO UPDATE SET transaction_id = excluded.transaction_id,
			position = excluded.position, updated_at = now()`

func saveCheckpoint(ctx context.Context, q execer, name string, cp Checkpoint) error {
	_, err := q.Exec(ctx, saveCheckpointSQL, name, strconv.FormatUint(cp.TransactionID, 10), cp.Position)
	return db.Classify(err)
}

// queueCheckpoint queues saveCheckpoint's statement in b.
func queueCheckpoint(b *pgx.Batch, name string, cp Checkpoint) {
	b.Queue(saveCheckpointSQL, name, strconv.FormatUint(cp.TransactionID, 10), cp.Position)
}
