package eventstore

import (
	"context"
	"regexp"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// Reading in commit order walks the (transaction_id, position) index: no sort of the
// log, whatever its size (the relay and the chainer read this way on every batch).
func TestHistoryReadsFollowTheCommitOrderIndex(t *testing.T) {
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	org := uuid.New()
	for _, f := range []HistoryFilter{{}, {Organization: &org}, {TypePatterns: []string{"user.*"}}} {
		sql, args := historyQuery(f, Checkpoint{TransactionID: 1, Position: 1}, 500)
		tx, err := d.Pool.Begin(ctx)
		require.NoError(t, err)
		// An empty table favours other plans: take them off, so that a sort shows only where
		// the index cannot give the order.
		_, err = tx.Exec(ctx, `SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; SET LOCAL enable_sort = off`)
		require.NoError(t, err)
		plan := testenv.Explain(t, tx, "", sql, args...)
		require.NoError(t, tx.Rollback(ctx))
		assert.NotContains(t, plan, "Sort", "%+v:\n%s", f, plan)
	}
}

// Readers in commit order wait for the transactions running in their own database only:
// one left open in another database of the server (with transactions committed after
// it) holds nothing up here, where before it held the relay back for as long as it ran;
// one open in this database still does.
func TestReadersWaitForTheirOwnDatabaseOnly(t *testing.T) {
	ctx := context.Background()
	d, other := testenv.MustDatabase(t), testenv.MustDatabase(t)
	store := NewStore(d.Pool)
	defer store.Close()
	org := uuid.New()
	appendOne := func() {
		_, err := store.Append(ctx, AppendRequest{StreamType: events.StreamUser, StreamID: uuid.New(), OrganizationID: &org,
			Meta:   events.Meta{Actor: events.Actor{Type: events.ActorSystem}},
			Events: []events.Event{events.UserCreated{Name: "Ada", Email: "ada@example.com", Roles: []string{"member"}, Status: "active"}}})
		require.NoError(t, err)
	}
	// hold opens a transaction with a transaction id in pool's database.
	hold := func(pool *pgxpool.Pool) (release func()) {
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		_, err = tx.Exec(ctx, `SELECT pg_current_xact_id()`)
		require.NoError(t, err)
		return func() { require.NoError(t, tx.Rollback(ctx)) }
	}
	readable := func(cp Checkpoint) ([]events.Envelope, Checkpoint) {
		batch, next, err := ReadCommitted(ctx, d.Pool, cp, 100)
		require.NoError(t, err)
		n, err := CountHistory(ctx, d.Pool, HistoryFilter{})
		require.NoError(t, err)
		assert.Equal(t, int64(cp.Position)+int64(len(batch)), n, "CountHistory takes the same horizon")
		return batch, next
	}

	release := hold(other.Pool)
	appendOne()
	batch, cp := readable(Checkpoint{})
	assert.Len(t, batch, 1, "a transaction of another database holds nothing up")
	release()

	release = hold(d.Pool)
	appendOne()
	batch, _ = readable(cp)
	assert.Empty(t, batch, "a transaction of this database, older than the append, may still commit events before it")
	release()
	batch, _ = readable(cp)
	assert.Len(t, batch, 1)
}

// A transaction is marked as never appending (NeverAppends) only before it has written,
// and a marked one cannot insert into events: the readers leave marked transactions out
// of their horizon, and so could skip the events of one that appended.
func TestOnlyATransactionThatHasNotWrittenIsMarkedAndItCannotAppend(t *testing.T) {
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	tx, err := d.Pool.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `SELECT pg_current_xact_id()`)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `SELECT `+NeverAppends, NeverAppendsArgs()...)
	assert.ErrorContains(t, err, "has written")
	require.NoError(t, tx.Rollback(ctx))

	tx, err = d.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = tx.Exec(ctx, `SELECT `+NeverAppends, NeverAppendsArgs()...)
	require.NoError(t, err)
	org := uuid.New()
	store := NewStore(d.Pool)
	defer store.Close()
	_, err = store.AppendTx(ctx, tx, AppendRequest{StreamType: events.StreamUser, StreamID: uuid.New(), OrganizationID: &org,
		Meta:   events.Meta{Actor: events.Actor{Type: events.ActorSystem}},
		Events: []events.Event{events.UserCreated{Name: "Ada", Email: "ada@example.com", Roles: []string{"member"}, Status: "active"}}})
	assert.ErrorContains(t, err, "never appending")
}

// The relay's checkpoint and the chainer's links are written by transactions that never
// append: each is marked (NeverAppends) before it writes, so that readers in commit
// order do not wait for it.
func TestTheRelaysAndTheChainersWritesAreMarked(t *testing.T) {
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	pool, traced := testenv.MustTracedPool(t, d.URL)
	marks := regexp.MustCompile(`chatbotd_never_appends`)

	r := &Relay{pool: pool, cfg: RelayConfig{Name: "marked"}}
	require.NoError(t, r.saveCheckpoint(ctx, Checkpoint{TransactionID: 1, Position: 1}))
	mark, write := traced.FirstMatching(marks), traced.FirstMatching(regexp.MustCompile(`INSERT INTO relay_checkpoints`))
	assert.True(t, mark >= 0 && mark < write, "the checkpoint's transaction is marked before it writes: %q", traced.All())

	store := NewStore(d.Pool)
	defer store.Close()
	org := uuid.New()
	_, err := store.Append(ctx, AppendRequest{StreamType: events.StreamUser, StreamID: uuid.New(), OrganizationID: &org,
		Meta:   events.Meta{Actor: events.Actor{Type: events.ActorSystem}},
		Events: []events.Event{events.UserCreated{Name: "Ada", Email: "ada@example.com", Roles: []string{"member"}, Status: "active"}}})
	require.NoError(t, err)
	traced.Reset()
	n, err := (&Chainer{Pool: pool, Key: events.ChainKey("0123456789abcdef0123456789abcdef-test-key")}).Step(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	mark, write = traced.FirstMatching(marks), traced.FirstMatching(regexp.MustCompile(`INSERT INTO audit_chain`))
	assert.True(t, mark >= 0 && mark < write, "the chainer's transaction is marked before it writes: %q", traced.All())
}
