package projections

import (
	"context"
	"errors"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/broker"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// swept is a projector the sweep checks and never applies.
type swept struct{}

func (swept) Name() string                                         { return "swept" }
func (swept) Bindings() []string                                   { return []string{"#"} }
func (swept) Apply(context.Context, pgx.Tx, events.Envelope) error { return nil }

// A pass that stops after a page (a failure there) has recorded it: the next pass goes on
// after it, and neither reads an event twice.
func TestSweepResumesAfterItsLastPage(t *testing.T) {
	ctx := context.Background()
	d, a := testenv.MustDatabase(t), testenv.MustAMQP(t)
	a.Queue("swept")
	conn := broker.Dial(a.URL, testenv.Logger(t))
	defer conn.Close()
	r, err := NewRunner(d.Pool, conn, swept{}, Config{Exchange: a.Exchange, QueuePrefix: a.QueuePrefix})
	require.NoError(t, err)
	_, ch := a.MustEventChannel(t)
	require.NoError(t, broker.DeclareQueue(ch, r.Queue()))
	// Five events, each applied (its stream's version recorded), and the relay past them.
	for _, sql := range []string{`INSERT INTO events (id, stream_type, stream_id, stream_version, type, schema_version,
			actor_type, data, occurred_at)
		SELECT gen_random_uuid(), 'user', gen_random_uuid(), 1, 'user.created', 1, 'system', '{}', clock_timestamp()
		FROM generate_series(1, 5)`,
		`INSERT INTO projection_streams (projection, stream_id, version) SELECT 'swept', stream_id, 1 FROM events`,
		`INSERT INTO projection_positions (projection, position, last_event_at, events_applied, updated_at)
		SELECT 'swept', max(position), now(), 5, now() FROM events`} {
		_, err := d.Pool.Exec(ctx, sql)
		require.NoError(t, err)
	}
	var last eventstore.Checkpoint
	var txid string
	require.NoError(t, d.Pool.QueryRow(ctx, `SELECT transaction_id::text, max(position) FROM events GROUP BY 1`).Scan(&txid, &last.Position))
	last.TransactionID, err = strconv.ParseUint(txid, 10, 64)
	require.NoError(t, err)
	_, err = d.Pool.Exec(ctx, `INSERT INTO projection_sweeps (name, transaction_id, position, bound_transaction_id, bound_position)
		VALUES ('swept', '0', 0, $1::text::xid8, $2)`, txid, last.Position)
	require.NoError(t, err)

	broken := errors.New("stopped after a page")
	s := &Sweep{Pool: d.Pool, Broker: conn, Interval: 1, page: 2, afterPage: func() error { return broken }}
	res, err := s.Pass(ctx, r)
	require.ErrorIs(t, err, broken)
	assert.Equal(t, SweepPass{Checked: 2}, res)
	var at int64
	require.NoError(t, d.Pool.QueryRow(ctx, `SELECT position FROM projection_sweeps WHERE name = 'swept'`).Scan(&at))
	assert.Equal(t, last.Position-3, at, "the first page, recorded")

	s.afterPage = nil
	res, err = s.Pass(ctx, r)
	require.NoError(t, err)
	assert.Equal(t, SweepPass{Checked: 3}, res, "the rest, from where the first pass stopped")
	require.NoError(t, d.Pool.QueryRow(ctx, `SELECT position FROM projection_sweeps WHERE name = 'swept'`).Scan(&at))
	assert.Equal(t, last.Position, at)
}
