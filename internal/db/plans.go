package db

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// Generic plans for the statements that run at every batch.
//
// pgx prepares each statement once per connection, and PostgreSQL then plans it either
// for the values it is given (a custom plan, made at every execution) or once for any
// values (a generic plan, kept). It keeps making custom plans for as long as the generic
// plan's estimated cost is higher, which is the case for "= ANY($1)" (the generic plan
// assumes ten elements) and for a LIMIT taken as a parameter: the group commit's insert,
// the relay's read, the webhooks projector's subscriptions and the chain's heads were
// planned again at every batch, 0.1 to 0.6 ms each, though their plan is the same
// whatever the values (by key, or in index order). Statements whose best plan does
// depend on the values (a search, a time range over partitions) must not run in this
// mode.

// GenericPlans makes the statements after it in its transaction (an explicit one, or a
// batch's implicit one) use generic plans. DefaultPlans ends that within the
// transaction, back to the server's setting.
const (
	GenericPlans = `SELECT set_config('plan_cache_mode', 'force_generic_plan', true)`
	DefaultPlans = `SET LOCAL plan_cache_mode TO DEFAULT`
)

// Batcher is a pool, a connection or a transaction.
type Batcher interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// QueryGeneric runs sql with a generic plan and collects its rows with scan. On a pool
// or a connection it is one round trip, in a transaction of its own; in a transaction
// the generic plans stay in force until it ends.
func QueryGeneric[T any](ctx context.Context, q Batcher, scan pgx.RowToFunc[T], sql string, args ...any) ([]T, error) {
	b := &pgx.Batch{}
	b.Queue(GenericPlans)
	b.Queue(sql, args...)
	br := q.SendBatch(ctx, b)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return nil, err
	}
	rows, err := br.Query()
	if err != nil {
		return nil, err
	}
	out, err := pgx.CollectRows(rows, scan)
	if err != nil {
		return nil, err
	}
	// The batch is closed before returning, so that its connection is back in the pool
	// when the caller queries it again (a pool of one would otherwise wait for itself).
	return out, br.Close()
}
