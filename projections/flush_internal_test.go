package projections

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
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
