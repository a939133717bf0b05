package projections

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// pipeTx sends a projector's writes in pipelined batches instead of one round trip each.
// It is for projectors that never depend on what an Exec returns (the rebuildable ones,
// and those that say so: Pipelined); a batch (live or rebuild) that meets an error is
// undone as a whole anyway, so the errors may as well come back together. A read (gap
// repair, a projector's own query) goes in the round trip of what is queued, after it,
// and the caller flushes before it commits. Without it a replay, and a live batch, waits
// on the network for every row (BENCHMARKS.md has the figures).
type pipeTx struct {
	pgx.Tx
	batch     pgx.Batch
	committed bool // by sendCommit: Tx knows nothing of it and must not be ended again
	// before, when set, is called once, before the transaction sends anything after its
	// prelude; an error it returns is the send's. A batch prepared while the batch before
	// it commits waits there for that commit (see committingBatch).
	before func() error
}

// ready calls before, once.
func (t *pipeTx) ready() error {
	if t.before == nil {
		return nil
	}
	f := t.before
	t.before = nil
	return f()
}

const pipeDepth = 1000

func (t *pipeTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	t.batch.Queue(sql, args...)
	if t.batch.Len() >= pipeDepth {
		return pgconn.CommandTag{}, t.flush(ctx)
	}
	return pgconn.CommandTag{}, nil
}

// Query sends what is queued and the query in one round trip: the query is the batch's
// last statement, so it sees every write before it.
func (t *pipeTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if err := t.ready(); err != nil {
		return nil, err
	}
	if t.batch.Len() == 0 {
		return t.Tx.Query(ctx, sql, args...)
	}
	br, err := t.send(ctx, sql, args)
	if err != nil {
		return nil, err
	}
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return nil, err
	}
	return &batchRows{Rows: rows, br: br}, nil
}

// QueryRow is Query for one row.
func (t *pipeTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if err := t.ready(); err != nil {
		return errRow{err}
	}
	if t.batch.Len() == 0 {
		return t.Tx.QueryRow(ctx, sql, args...)
	}
	br, err := t.send(ctx, sql, args)
	if err != nil {
		return errRow{err}
	}
	return batchRow{Row: br.QueryRow(), br: br}
}

// send sends what is queued, with sql last unless it is empty, and reads the queued
// statements' results; the caller reads sql's and closes the results.
func (t *pipeTx) send(ctx context.Context, sql string, args []any) (pgx.BatchResults, error) {
	if err := t.ready(); err != nil {
		return nil, err
	}
	n := t.batch.Len()
	b := t.batch // the batch is read as its results are: it must not change meanwhile
	t.batch = pgx.Batch{}
	if sql != "" {
		b.Queue(sql, args...)
	}
	br := t.Tx.SendBatch(ctx, &b)
	for range n {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return nil, err
		}
	}
	return br, nil
}

// batchRows are a query's rows at the end of a batch: closing them closes the batch.
type batchRows struct {
	pgx.Rows
	br  pgx.BatchResults
	err error
}

func (r *batchRows) Close() {
	r.Rows.Close()
	if r.br != nil {
		r.err, r.br = r.br.Close(), nil
	}
}

func (r *batchRows) Err() error {
	if err := r.Rows.Err(); err != nil {
		return err
	}
	return r.err
}

func (r *batchRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.Close() // as pgx's rows close themselves at the end
	return false
}

type batchRow struct {
	pgx.Row
	br pgx.BatchResults
}

func (r batchRow) Scan(dest ...any) error {
	err := r.Row.Scan(dest...)
	if cerr := r.br.Close(); err == nil {
		err = cerr
	}
	return err
}

func (t *pipeTx) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	if err := t.flush(ctx); err != nil {
		return 0, err
	}
	return t.Tx.CopyFrom(ctx, table, columns, src)
}

func (t *pipeTx) flush(ctx context.Context) error {
	if err := t.ready(); err != nil {
		return err
	}
	if t.batch.Len() == 0 {
		return nil
	}
	br, err := t.send(ctx, "", nil)
	if err != nil {
		return err
	}
	return br.Close()
}

// sendCommit sends what is queued and COMMIT in one round trip, where flush and
// Tx.Commit would take two, and returns what reads the outcome: the caller calls it once,
// before anything else uses the connection, which is busy meanwhile. The writes return
// no rows, so PostgreSQL never waits for the caller to read before it commits. pgx's
// transaction is not told (it has no way to commit in a batch): once committed it must
// not be used, and Rollback does nothing. Only for a transaction on a connection the
// caller releases itself (applyMembers begun on conn): a pool's transaction gives its
// connection back in its own Commit or Rollback.
func (t *pipeTx) sendCommit(ctx context.Context) (func() error, error) {
	if err := t.ready(); err != nil {
		return nil, err
	}
	b := t.batch
	t.batch = pgx.Batch{}
	n := b.Len()
	b.Queue("COMMIT")
	br := t.Tx.SendBatch(ctx, &b)
	return func() error {
		for range n {
			if _, err := br.Exec(); err != nil {
				_ = br.Close()
				return err
			}
		}
		tag, err := br.Exec()
		if cerr := br.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		t.committed = true
		if tag.String() == "ROLLBACK" { // COMMIT of a failed transaction; cannot follow a failed statement in the same batch
			return pgx.ErrTxCommitRollback
		}
		return nil
	}, nil
}

// Rollback rolls the transaction back, unless its COMMIT (sendCommit) has ended it.
func (t *pipeTx) Rollback(ctx context.Context) error {
	if t.committed {
		return pgx.ErrTxClosed
	}
	return t.Tx.Rollback(ctx)
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }
