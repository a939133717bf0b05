package projections

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// counting applies nothing but counts what it is given.
type counting struct{ applied int }

func (*counting) Name() string       { return "counting" }
func (*counting) Bindings() []string { return []string{"#"} }
func (c *counting) Apply(context.Context, pgx.Tx, events.Envelope) error {
	c.applied++
	return nil
}

// A batch writes each stream's version row once: a stream new to the projection is
// inserted at the version the batch leaves it at, a known stream is raised once, and
// a stream whose events were all applied before is not written at all.
func TestBatchWritesEachStreamRowOnce(t *testing.T) {
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	store := eventstore.NewStore(d.Pool)
	org := uuid.New()
	meta := events.Meta{Actor: events.Actor{Type: events.ActorSystem}}
	stream := func(n int) []events.Envelope {
		t.Helper()
		id := uuid.New()
		for i := range n {
			_, err := store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamUser, StreamID: id, ExpectedVersion: i,
				OrganizationID: &org, Events: []events.Event{events.UserUpdated{Changes: map[string]events.Change{
					"name": {Old: "a", New: "b"}}}}, Meta: meta})
			require.NoError(t, err)
		}
		envs, err := eventstore.ReadStream(ctx, d.Pool, id, 1, n)
		require.NoError(t, err)
		require.Len(t, envs, n)
		return envs
	}
	known, done, fresh, gapped := stream(3), stream(1), stream(2), stream(3)
	p := &counting{}
	_, err := ApplyBatch(ctx, d.Pool, p, []events.Envelope{known[0], done[0]})
	require.NoError(t, err)

	tx, err := d.Pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx)
	// The counters include what the connection's earlier transactions wrote until its
	// statistics are flushed: the difference is this transaction's.
	writes := func() (inserted, updated int) {
		t.Helper()
		require.NoError(t, tx.QueryRow(ctx, `SELECT pg_stat_get_xact_tuples_inserted('projection_streams'::regclass),
			pg_stat_get_xact_tuples_updated('projection_streams'::regclass)`).Scan(&inserted, &updated))
		return inserted, updated
	}
	ins0, upd0 := writes()
	// known goes on from 1 (its v3 before its v2), done comes again, fresh is new, and
	// gapped is new with its first version missing from the batch.
	batch := []events.Envelope{known[2], known[1], done[0], fresh[0], fresh[1], gapped[2], gapped[1]}
	applied, err := applyInTx(ctx, tx, p, batch, p.Name())
	require.NoError(t, err)
	assert.Len(t, applied, 2+2+3)

	ins1, upd1 := writes()
	assert.Equal(t, 2, ins1-ins0, "the new streams, fresh and gapped, each inserted once")
	assert.Equal(t, 1, upd1-upd0, "known raised once; done, fully applied before, left alone; the new ones not raised")

	rows, err := tx.Query(ctx, `SELECT stream_id, version FROM projection_streams WHERE projection = 'counting'`)
	require.NoError(t, err)
	versions := map[uuid.UUID]int{}
	for rows.Next() {
		var s uuid.UUID
		var v int
		require.NoError(t, rows.Scan(&s, &v))
		versions[s] = v
	}
	require.NoError(t, rows.Err())
	assert.Equal(t, map[uuid.UUID]int{known[0].StreamID: 3, done[0].StreamID: 1, fresh[0].StreamID: 2, gapped[0].StreamID: 3}, versions)
}

// BenchmarkBatchOfNewStreams is the runtime's own cost for a batch of 200 events that
// each start a stream (a user, a chatbot, a message): the lock, the version rows, the
// position and the commit, with a projector that writes nothing. It reports the WAL a
// batch writes too.
//
//	go test -run '^$' -bench BatchOfNewStreams -benchtime 200x ./projections
func BenchmarkBatchOfNewStreams(b *testing.B) {
	ctx := context.Background()
	d := testenv.MustDatabase(b)
	org := uuid.New()
	batch := make([]events.Envelope, 200)
	lsn := func() (l int64) {
		require.NoError(b, d.Pool.QueryRow(ctx, `SELECT pg_current_wal_lsn() - '0/0'`).Scan(&l))
		return l
	}
	p := &counting{}
	var wal int64
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		for i := range batch {
			batch[i] = events.Envelope{ID: uuid.New(), Type: "user.updated", StreamType: events.StreamUser, StreamID: uuid.New(),
				StreamVersion: 1, OrganizationID: &org, Position: int64(i + 1)}
		}
		before := lsn()
		b.StartTimer()
		if _, err := ApplyBatch(ctx, d.Pool, p, batch); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		wal += lsn() - before
		b.StartTimer()
	}
	b.ReportMetric(float64(wal)/float64(b.N), "WAL-bytes/batch")
}

// BenchmarkGroupBatch is what serving's group costs for a small batch, the batch a
// steady command load brings: n chatbots created, each a new stream applied by the
// chatbots, audit and webhooks members in one transaction (their preludes, writes,
// versions and positions, and the commit).
//
//	go test -run '^$' -bench GroupBatch -benchtime 300x ./projections
func BenchmarkGroupBatch(b *testing.B) {
	for _, n := range []int{1, 10} {
		b.Run(fmt.Sprintf("chatbots=%d", n), func(b *testing.B) {
			ctx := context.Background()
			d := testenv.MustDatabase(b)
			store := eventstore.NewStore(d.Pool)
			org := uuid.New()
			r, err := NewRunner(d.Pool, nil, NewProjectorGroup(Deps{Pool: d.Pool, Store: store}), Config{Exchange: "bench"})
			require.NoError(b, err)
			meta := events.Meta{Actor: events.Actor{Type: events.ActorSystem}}
			batch := make([]events.Envelope, n)
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				for i := range batch {
					id := uuid.New()
					_, err := store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamChatbot, StreamID: id,
						OrganizationID: &org, Events: []events.Event{events.ChatbotCreated{Name: "Bench bot",
							Responder: events.Responder{Type: "knowledge_base"}}}, Meta: meta})
					require.NoError(b, err)
					envs, err := eventstore.ReadStream(ctx, d.Pool, id, 1, 1)
					require.NoError(b, err)
					batch[i] = envs[0]
				}
				b.StartTimer()
				if err := r.applyBatch(ctx, r.shares(batch), batch); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
