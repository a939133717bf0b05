package projections

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// pipeTx sends a rebuildable projector's writes in pipelined batches instead of one
// round trip each: such projectors only Exec, and a batch (live or rebuild) that meets
// an error is undone as a whole anyway, so the errors may as well come back together. A
// read (gap repair, a projector's own query) sends what is queued first, and the caller
// flushes before it commits. Without it a replay, and a live batch, waits on the network
// for every row (BENCHMARKS.md has the figures).
type pipeTx struct {
	pgx.Tx
	batch pgx.Batch
}

const pipeDepth = 1000

func (t *pipeTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	t.batch.Queue(sql, args...)
	if t.batch.Len() >= pipeDepth {
		return pgconn.CommandTag{}, t.flush(ctx)
	}
	return pgconn.CommandTag{}, nil
}

func (t *pipeTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if err := t.flush(ctx); err != nil {
		return nil, err
	}
	return t.Tx.Query(ctx, sql, args...)
}

func (t *pipeTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if err := t.flush(ctx); err != nil {
		return errRow{err}
	}
	return t.Tx.QueryRow(ctx, sql, args...)
}

func (t *pipeTx) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	if err := t.flush(ctx); err != nil {
		return 0, err
	}
	return t.Tx.CopyFrom(ctx, table, columns, src)
}

func (t *pipeTx) flush(ctx context.Context) error {
	n := t.batch.Len()
	if n == 0 {
		return nil
	}
	b := t.batch // the batch is read as its results are: it must not change meanwhile
	t.batch = pgx.Batch{}
	br := t.Tx.SendBatch(ctx, &b)
	for range n {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return err
		}
	}
	return br.Close()
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }
