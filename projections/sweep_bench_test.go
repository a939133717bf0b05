package projections_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/broker"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
	"github.com/chatbotsaas/chatbotd/projections"
	"github.com/chatbotsaas/chatbotd/projections/reactors"
)

// BenchmarkSweep is what the sweep costs a checked event, when nothing is missing (the
// usual pass), against its baseline: the relay's read of the same events, in its batches
// of 500. 20,000 events, each of a stream of its own, applied by both members of a group
// (one binds every event, one their type), as the projectors' group has them.
//
//	go test ./projections -run '^$' -bench Sweep -benchtime 20x
func BenchmarkSweep(b *testing.B) {
	const n = 20000
	ctx := context.Background()
	d, a := testenv.MustDatabase(b), testenv.MustAMQP(b)
	a.Queue("benchgrp")
	conn := broker.Dial(a.URL, nil)
	defer conn.Close()
	noop := func(name string, bindings ...string) projections.Projector {
		return benchMember{name: name, bindings: bindings}
	}
	runner, err := projections.NewRunner(d.Pool, conn, projections.NewGroup("benchgrp", noop("bench.all", "#"),
		noop("bench.users", "user.*")), projections.Config{Exchange: a.Exchange, QueuePrefix: a.QueuePrefix})
	require.NoError(b, err)
	_, ch := a.MustEventChannel(b)
	require.NoError(b, broker.DeclareQueue(ch, runner.Queue()))

	_, err = d.Pool.Exec(ctx, `INSERT INTO events (id, stream_type, stream_id, stream_version, type, schema_version,
			organization_id, actor_type, data, occurred_at)
		SELECT gen_random_uuid(), 'user', gen_random_uuid(), 1, 'user.created', 1, NULL, 'system', '{}', clock_timestamp()
		FROM generate_series(1, $1)`, n)
	require.NoError(b, err)
	_, err = d.Pool.Exec(ctx, `INSERT INTO projection_streams (projection, stream_id, version)
		SELECT m, stream_id, stream_version FROM events, unnest(ARRAY['bench.all', 'bench.users']) AS m`)
	require.NoError(b, err)
	last := benchPublished(b, d.Pool)
	b.Run("sweep", func(b *testing.B) {
		sweep := &projections.Sweep{Pool: d.Pool, Broker: conn, Runners: []*projections.Runner{runner}, Interval: time.Hour}
		for range b.N {
			benchSweepDue(b, d.Pool, "benchgrp", last)
			res, err := sweep.Pass(ctx, runner)
			require.NoError(b, err)
			require.Equal(b, projections.SweepPass{Checked: n}, res)
		}
		benchPerEvent(b, n)
	})
	b.Run("relay read", func(b *testing.B) { benchRelayRead(b, d.Pool, n) })
}

// benchPublished records the log written so far as published (the relay's checkpoint at
// its last event), analyzes it, and returns that checkpoint.
func benchPublished(b *testing.B, pool *pgxpool.Pool) eventstore.Checkpoint {
	ctx := context.Background()
	_, err := pool.Exec(ctx, `INSERT INTO relay_checkpoints (name, transaction_id, position, updated_at)
		SELECT 'default', transaction_id, position, now() FROM events ORDER BY transaction_id DESC, position DESC LIMIT 1`)
	require.NoError(b, err)
	for _, t := range []string{"events", "projection_streams"} {
		_, err = pool.Exec(ctx, `VACUUM ANALYZE `+t)
		require.NoError(b, err)
	}
	last, err := eventstore.RelayCheckpoint(ctx, pool, "")
	require.NoError(b, err)
	return last
}

// benchSweepDue makes the whole log, up to last, the stretch that name's next pass checks;
// the timer is stopped meanwhile.
func benchSweepDue(b *testing.B, pool *pgxpool.Pool, name string, last eventstore.Checkpoint) {
	b.StopTimer()
	defer b.StartTimer()
	_, err := pool.Exec(context.Background(), `INSERT INTO projection_sweeps (name, transaction_id, position, bound_transaction_id, bound_position)
		VALUES ($1, '0', 0, $2::text::xid8, $3)
		ON CONFLICT (name) DO UPDATE SET transaction_id = '0', position = 0,
			bound_transaction_id = excluded.bound_transaction_id, bound_position = excluded.bound_position`,
		name, strconv.FormatUint(last.TransactionID, 10), last.Position)
	require.NoError(b, err)
}

// benchRelayRead is the baseline: the relay's read of the log's n events, in its batches
// of 500.
func benchRelayRead(b *testing.B, pool *pgxpool.Pool, n int) {
	for range b.N {
		cp, read := eventstore.Checkpoint{}, 0
		for read < n {
			batch, next, err := eventstore.ReadCommitted(context.Background(), pool, cp, 500)
			require.NoError(b, err)
			cp, read = next, read+len(batch)
		}
	}
	benchPerEvent(b, n)
}

// benchPerEvent reports the time an event of n per op.
func benchPerEvent(b *testing.B, n int) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
}

// benchMember is a group member that the benchmark never applies.
type benchMember struct {
	name     string
	bindings []string
}

func (m benchMember) Name() string       { return m.name }
func (m benchMember) Bindings() []string { return m.bindings }
func (benchMember) Apply(context.Context, pgx.Tx, events.Envelope) error {
	return nil
}

// BenchmarkSweepWebhookResponder is what a pass over the webhook responder costs a checked
// event when every message is answered (the usual pass), against the relay's read of the
// same events: 10,000 messages, each posted and answered (20,000 events), applied by the
// knowledge-base responder.
//
//	go test ./projections -run '^$' -bench SweepWebhookResponder -benchtime 20x
func BenchmarkSweepWebhookResponder(b *testing.B) {
	const messages = 10000
	const n = 2 * messages
	ctx := context.Background()
	d, a := testenv.MustDatabase(b), testenv.MustAMQP(b)
	queue := broker.QueueSpec{Name: a.Queue(reactors.WebhookResponderName), Exchange: a.Exchange, Bindings: []string{"message.posted"}}
	conn := broker.Dial(a.URL, nil)
	defer conn.Close()
	_, ch := a.MustEventChannel(b)
	require.NoError(b, broker.DeclareQueue(ch, queue))

	_, err := d.Pool.Exec(ctx, `WITH m AS (SELECT gen_random_uuid() AS id FROM generate_series(1, $1))
		INSERT INTO events (id, stream_type, stream_id, stream_version, type, schema_version,
			organization_id, actor_type, data, occurred_at)
		SELECT gen_random_uuid(), 'message', m.id, v, CASE v WHEN 1 THEN 'message.posted' ELSE 'message.replied' END, 1,
			NULL, 'system', '{}', clock_timestamp()
		FROM m, generate_series(1, 2) AS v ORDER BY m.id, v`, messages)
	require.NoError(b, err)
	_, err = d.Pool.Exec(ctx, `INSERT INTO projection_streams (projection, stream_id, version)
		SELECT $1, stream_id, max(stream_version) FROM events GROUP BY stream_id`, reactors.ResponderName)
	require.NoError(b, err)
	last := benchPublished(b, d.Pool)
	b.Run("sweep", func(b *testing.B) {
		sweep := &projections.Sweep{Pool: d.Pool, Broker: conn, Interval: time.Hour,
			WebhookResponder: &projections.WebhookSweep{Queue: queue.Name, Hold: time.Hour}}
		for range b.N {
			benchSweepDue(b, d.Pool, reactors.WebhookResponderName, last)
			res, err := sweep.PassWebhookResponder(ctx)
			require.NoError(b, err)
			require.Equal(b, projections.SweepPass{Checked: n}, res)
		}
		benchPerEvent(b, n)
	})
	b.Run("relay read", func(b *testing.B) { benchRelayRead(b, d.Pool, n) })
}
