package projections

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// committing records, in Apply, whether its transaction waits for the disk at commit,
// and its after-commit work in steps.
type committing struct {
	sync  []string
	steps *[]string
	mu    *sync.Mutex
}

func (*committing) Name() string       { return "committing" }
func (*committing) Bindings() []string { return []string{"#"} }
func (c *committing) Apply(ctx context.Context, tx pgx.Tx, _ events.Envelope) error {
	var v string
	if err := tx.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&v); err != nil {
		return err
	}
	c.sync = append(c.sync, v)
	return nil
}
func (c *committing) AfterCommit(context.Context, []events.Envelope) error {
	c.step("after-commit")
	return nil
}
func (c *committing) step(s string) {
	c.mu.Lock()
	*c.steps = append(*c.steps, s)
	c.mu.Unlock()
}

// acks records acknowledgements as steps.
type acks struct{ c *committing }

func (a acks) Ack(uint64, bool) error        { a.c.step("ack"); return nil }
func (a acks) Nack(uint64, bool, bool) error { a.c.step("nack"); return nil }
func (a acks) Reject(uint64, bool) error     { a.c.step("reject"); return nil }

// With DeferFlush a batch commits without waiting for the disk, and the settler makes
// the WAL durable before anything acts on the batch outside PostgreSQL: its after-commit
// work, its acknowledgement. When that fails, the batch is neither: it comes back.
func TestDeferredFlushComesBeforeTheAcknowledgement(t *testing.T) {
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	org := uuid.New()
	batch := func() []events.Envelope {
		return []events.Envelope{{ID: uuid.New(), Type: "user.updated", StreamType: events.StreamUser, StreamID: uuid.New(),
			StreamVersion: 1, OrganizationID: &org, Position: 1}}
	}
	for _, deferred := range []bool{false, true} {
		c := &committing{steps: &[]string{}, mu: &sync.Mutex{}}
		r, err := NewRunner(d.Pool, nil, c, Config{Exchange: "test", DeferFlush: deferred})
		require.NoError(t, err)
		envs := batch()
		require.NoError(t, r.applyBatch(ctx, r.shares(envs), envs))
		want := "on"
		if deferred {
			want = "off"
		}
		assert.Equal(t, []string{want}, c.sync, "synchronous_commit in the batch, DeferFlush %v", deferred)
		if !deferred {
			continue
		}
		var flushErr error
		r.flushWAL = func(ctx context.Context) error {
			c.step("flush")
			if flushErr != nil {
				return flushErr
			}
			return r.syncCommit(ctx)
		}
		s := newSettler(ctx, nil, r)
		delivery := amqp.Delivery{Acknowledger: acks{c}, DeliveryTag: 1}
		require.NoError(t, s.submit(settlement{shares: r.shares(envs), envs: envs, good: []amqp.Delivery{delivery}}))
		require.NoError(t, s.wait())
		assert.Equal(t, []string{"flush", "after-commit", "ack"}, *c.steps)

		*c.steps, flushErr = nil, errors.New("PostgreSQL went away")
		require.NoError(t, s.submit(settlement{shares: r.shares(envs), envs: envs, good: []amqp.Delivery{delivery}}))
		assert.ErrorIs(t, s.wait(), flushErr)
		assert.Equal(t, []string{"flush"}, *c.steps, "neither after-commit work nor acknowledgement without the flush")
		s.close()
	}
}

// holding stops in Apply, its batch's transaction open and written to, until released;
// with appendIn set, Apply first tries to insert an event in the batch's transaction.
type holding struct {
	inside, release chan struct{}
	appendIn        bool
}

func (*holding) Name() string       { return "holding" }
func (*holding) Bindings() []string { return []string{"#"} }
func (h *holding) Apply(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
	if h.appendIn {
		_, err := tx.Exec(ctx, `INSERT INTO events (id, stream_type, stream_id, stream_version, type, schema_version,
			organization_id, actor_type, data, occurred_at) VALUES ($1, 'user', $2, 1, 'user.created', 1, $3, 'system', '{}', now())`,
			uuid.New(), uuid.New(), e.OrganizationID)
		return err
	}
	close(h.inside)
	<-h.release
	return nil
}

// A batch of a runner with DeferFlush (serving's group) is marked as never appending:
// the relay reads the appends that commit while it runs, where it waited for every
// batch's commit before; and an append in such a batch fails. Without the flag, the
// batch holds the relay back as any other transaction of the database.
func TestDeferredBatchesDoNotHoldTheRelayBack(t *testing.T) {
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	store := eventstore.NewStore(d.Pool)
	defer store.Close()
	org := uuid.New()
	var cp eventstore.Checkpoint
	for _, deferred := range []bool{true, false} {
		h := &holding{inside: make(chan struct{}), release: make(chan struct{})}
		r, err := NewRunner(d.Pool, nil, h, Config{Exchange: "test", DeferFlush: deferred})
		require.NoError(t, err)
		envs := []events.Envelope{{ID: uuid.New(), Type: "user.updated", StreamType: events.StreamUser, StreamID: uuid.New(),
			StreamVersion: 1, OrganizationID: &org, Position: 1}}
		applied := make(chan error, 1)
		go func() { applied <- r.applyBatch(ctx, r.shares(envs), envs) }()
		<-h.inside
		_, err = store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamUser, StreamID: uuid.New(), OrganizationID: &org,
			Meta:   events.Meta{Actor: events.Actor{Type: events.ActorSystem}},
			Events: []events.Event{events.UserCreated{Name: "Ada", Email: "ada@example.com", Roles: []string{"member"}, Status: "active"}}})
		require.NoError(t, err)
		batch, next, err := eventstore.ReadCommitted(ctx, d.Pool, cp, 100)
		require.NoError(t, err)
		if deferred {
			assert.Len(t, batch, 1, "the append is read while the marked batch runs")
		} else {
			assert.Empty(t, batch, "an unmarked batch, older than the append, may still append before it")
		}
		close(h.release)
		require.NoError(t, <-applied)
		if batch, next, err = eventstore.ReadCommitted(ctx, d.Pool, next, 100); !deferred {
			require.NoError(t, err)
			assert.Len(t, batch, 1)
		}
		cp = next
	}

	h := &holding{appendIn: true}
	r, err := NewRunner(d.Pool, nil, h, Config{Exchange: "test", DeferFlush: true})
	require.NoError(t, err)
	envs := []events.Envelope{{ID: uuid.New(), Type: "user.updated", StreamType: events.StreamUser, StreamID: uuid.New(),
		StreamVersion: 1, OrganizationID: &org, Position: 2}}
	assert.ErrorContains(t, r.applyBatch(ctx, r.shares(envs), envs), "never appending")
}

// The settler's flush never appends, and holds its transaction id while it waits for the
// disk: it is marked (eventstore.NeverAppends) before it takes its id, so that the relay
// does not wait for it.
func TestTheFlushIsMarkedBeforeItTakesItsID(t *testing.T) {
	d := testenv.MustDatabase(t)
	pool, traced := testenv.MustTracedPool(t, d.URL)
	r, err := NewRunner(pool, nil, &committing{steps: &[]string{}, mu: &sync.Mutex{}}, Config{Exchange: "test", DeferFlush: true})
	require.NoError(t, err)
	require.NoError(t, r.durable(context.Background()))
	alone, batches := traced.RoundTrips()
	require.Len(t, batches, 1, "one round trip: %q %q", alone, batches)
	b := batches[0]
	mark := slices.IndexFunc(b, func(q string) bool { return strings.Contains(q, "chatbotd_never_appends") })
	id := slices.IndexFunc(b, func(q string) bool { return strings.Contains(q, "txid_current") })
	assert.True(t, mark >= 0 && mark < id, "marked before it takes its id: %q", b)
}
