package projections_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/broker"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
	"github.com/chatbotsaas/chatbotd/projections"
)

// conversation appends a conversation with n messages, one of them answered.
func conversation(ctx context.Context, s *eventstore.Store, org uuid.UUID, n int) error {
	conv, bot := uuid.New(), uuid.New()
	if _, err := s.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamConversation, StreamID: conv, OrganizationID: &org,
		Events: []events.Event{events.ConversationStarted{ChatbotID: bot.String(), Metadata: map[string]any{"channel": "web"}}},
		Meta:   system}); err != nil {
		return err
	}
	for i := range n {
		msg := uuid.New()
		evs := []events.Event{events.MessagePosted{ConversationID: conv.String(), ChatbotID: bot.String(), Content: fmt.Sprint("question ", i)}}
		if i == 0 {
			evs = append(evs, events.MessageReplied{ConversationID: conv.String(), ChatbotID: bot.String(),
				ReplyID: uuid.NewString(), Content: "answer", Source: "fallback"})
		}
		if _, err := s.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamMessage, StreamID: msg, OrganizationID: &org,
			Events: evs, Meta: system}); err != nil {
			return err
		}
	}
	return nil
}

// checksums renders a projection's tables and its stream versions as digests.
func checksums(t *testing.T, pool *pgxpool.Pool, projection string, tables ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	ctx := context.Background()
	for _, tb := range tables {
		var sum *string
		require.NoError(t, pool.QueryRow(ctx, `SELECT md5(string_agg(r::text, '|' ORDER BY r::text)) FROM `+
			pgx.Identifier{tb}.Sanitize()+` r`).Scan(&sum))
		out[tb] = deref(sum)
	}
	var sum *string
	require.NoError(t, pool.QueryRow(ctx, `SELECT md5(string_agg(stream_id::text || ':' || version, '|' ORDER BY stream_id))
		FROM projection_streams WHERE projection = $1`, projection).Scan(&sum))
	out["projection_streams"] = deref(sum)
	return out
}

func indexNames(t *testing.T, pool *pgxpool.Pool, table string) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT indexname FROM pg_indexes WHERE schemaname = 'public'
		AND tablename = $1 ORDER BY indexname`, table)
	require.NoError(t, err)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return names
}

func TestRebuildWhileWritesContinueEqualsLive(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := testenv.MustDatabase(t)
	a := testenv.MustAMQP(t)
	store := eventstore.NewStore(d.Pool)
	conn := broker.Dial(a.URL, testenv.Logger(t))
	defer conn.Close()
	org := uuid.New()

	live := []projections.Rebuildable{projections.Conversations{}, projections.Audit{}}
	var runners []*projections.Runner
	var queues []broker.QueueSpec
	for _, p := range live {
		a.Queue(p.Name())
		r, err := projections.NewRunner(d.Pool, conn, p, projections.Config{Exchange: a.Exchange, QueuePrefix: a.QueuePrefix,
			Logger: testenv.Logger(t)})
		require.NoError(t, err)
		runners, queues = append(runners, r), append(queues, r.Queue())
	}
	relay, err := eventstore.NewRelay(d.Pool, conn, eventstore.RelayConfig{Exchange: a.Exchange, Queues: queues, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	go relay.Run(ctx)
	for _, r := range runners {
		go r.Run(ctx)
	}
	for range 40 {
		require.NoError(t, conversation(ctx, store, org, 5))
	}
	beforeIdx := map[string][]string{}
	for _, tb := range []string{"conversations", "messages", "audit_entries"} {
		beforeIdx[tb] = indexNames(t, d.Pool, tb)
	}

	// Writers and readers run for the whole rebuild.
	work, stopWork := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var queries, failed atomic.Int64
	var lastErr atomic.Value
	wg.Add(3)
	go func() {
		defer wg.Done()
		for work.Err() == nil {
			if err := conversation(ctx, store, org, 3); err != nil {
				lastErr.Store(err)
				failed.Add(1)
			}
		}
	}()
	for range 2 {
		go func() {
			defer wg.Done()
			for work.Err() == nil {
				var n int
				err := d.Pool.QueryRow(ctx, `SELECT count(*) FROM messages m JOIN conversations c ON c.id = m.conversation_id
					WHERE c.organization_id = $1`, org).Scan(&n)
				if err == nil {
					var rows pgx.Rows
					rows, err = d.Pool.Query(ctx, `SELECT `+eventstore.AuditColumns+` FROM audit_entries WHERE organization_id = $1
						ORDER BY occurred_at DESC, position DESC LIMIT 15`, org)
					if err == nil {
						_, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (events.AuditEntry, error) { return eventstore.ScanAuditEntry(r) })
					}
				}
				queries.Add(1)
				if err != nil {
					lastErr.Store(err)
					failed.Add(1)
				}
			}
		}()
	}

	var phases []string
	for _, p := range live {
		rb := &projections.Rebuild{Pool: d.Pool, Projector: p, BatchSize: 100, Progress: func(pr projections.Progress) {
			if len(phases) == 0 || phases[len(phases)-1] != pr.Phase {
				phases = append(phases, pr.Phase)
			}
		}}
		require.NoError(t, rb.Run(ctx), p.Name())
	}
	stopWork()
	wg.Wait()
	assert.Zero(t, failed.Load(), "queries and writes during the rebuild: %v", lastErr.Load())
	assert.Positive(t, queries.Load())
	assert.Contains(t, phases, "swap")
	assert.Equal(t, "done", phases[len(phases)-1])

	// Once the live projectors have caught up, the tables equal a projection of the whole
	// log applied in order, in a database of its own.
	var total int
	require.NoError(t, d.Pool.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&total))
	testenv.Eventually(t, 30*time.Second, func() error {
		var n int
		if err := d.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_entries`).Scan(&n); err != nil || n != total {
			return fmt.Errorf("%d of %d audited (%v)", n, total, err)
		}
		if err := d.Pool.QueryRow(ctx, `SELECT count(*) FROM events e WHERE NOT EXISTS (SELECT 1 FROM projection_streams p
			WHERE p.projection = 'conversations' AND p.stream_id = e.stream_id AND p.version >= e.stream_version)`).Scan(&n); err != nil || n > 0 {
			return fmt.Errorf("%d events not projected (%v)", n, err)
		}
		return nil
	})
	ref := testenv.MustDatabase(t)
	copyAllEvents(t, d.Pool, ref.Pool)
	all, _, err := eventstore.ReadHistory(ctx, ref.Pool, eventstore.HistoryFilter{}, eventstore.Checkpoint{}, 1<<20)
	require.NoError(t, err)
	for _, p := range live {
		_, err := projections.ApplyBatch(ctx, ref.Pool, p, all)
		require.NoError(t, err)
		assert.Equal(t, checksums(t, ref.Pool, p.Name(), p.Tables()...), checksums(t, d.Pool, p.Name(), p.Tables()...), p.Name())
	}
	for tb, names := range beforeIdx {
		assert.Equal(t, names, indexNames(t, d.Pool, tb), "indexes of %s keep their names", tb)
	}
	var partitioned bool
	require.NoError(t, d.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'public.messages'::regclass)`).Scan(&partitioned))
	assert.True(t, partitioned, "messages is still partitioned")
	var schemas int
	require.NoError(t, d.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'rebuild_%'`).Scan(&schemas))
	assert.Zero(t, schemas, "no rebuild schema is left behind")
}

// copyAllEvents copies the log, every column, positions included.
func copyAllEvents(t *testing.T, from, to *pgxpool.Pool) {
	t.Helper()
	ctx := context.Background()
	cols := []string{"position", "id", "stream_type", "stream_id", "stream_version", "type", "schema_version", "organization_id",
		"actor_type", "actor_id", "correlation_id", "causation_id", "request_id", "metadata", "data", "occurred_at", "transaction_id"}
	rows, err := from.Query(ctx, `SELECT position, id, stream_type, stream_id, stream_version, type, schema_version,
		organization_id, actor_type, actor_id, correlation_id, causation_id, request_id, metadata, data, occurred_at,
		transaction_id::text FROM events ORDER BY position`)
	require.NoError(t, err)
	vals, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([]any, error) { return r.Values() })
	require.NoError(t, err)
	for _, v := range vals {
		_, err := to.Exec(ctx, `INSERT INTO events (`+joinCols(cols)+`) OVERRIDING SYSTEM VALUE VALUES
			($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17::text::xid8)`, v...)
		require.NoError(t, err)
	}
}

func joinCols(cols []string) string {
	out := ""
	for i, c := range cols {
		if i > 0 {
			out += ", "
		}
		out += c
	}
	return out
}

func deref(s *string) string {
	if s == nil {
		return "<empty>"
	}
	return *s
}

// Messages are streams of their own: delivered before their conversation, twice, in any
// order and batching, they give the same conversations and messages as in order.
func TestConversationsShuffledDeliveryEqualsOrderly(t *testing.T) {
	ctx := context.Background()
	orderly := testenv.MustDatabase(t)
	store := eventstore.NewStore(orderly.Pool)
	for range 6 {
		require.NoError(t, conversation(ctx, store, uuid.New(), 4))
	}
	all, _, err := eventstore.ReadHistory(ctx, orderly.Pool, eventstore.HistoryFilter{}, eventstore.Checkpoint{}, 1000)
	require.NoError(t, err)
	for _, e := range all {
		_, err := projections.ApplyBatch(ctx, orderly.Pool, projections.Conversations{}, []events.Envelope{e})
		require.NoError(t, err)
	}
	p := projections.Conversations{}
	want := checksums(t, orderly.Pool, p.Name(), p.Tables()...)

	messy := testenv.MustDatabase(t)
	copyAllEvents(t, orderly.Pool, messy.Pool)
	deliveries := append(append([]events.Envelope{}, all...), all...)
	rand.Shuffle(len(deliveries), func(i, j int) { deliveries[i], deliveries[j] = deliveries[j], deliveries[i] })
	for len(deliveries) > 0 {
		n := min(len(deliveries), 1+rand.IntN(9))
		_, err := projections.ApplyBatch(ctx, messy.Pool, p, deliveries[:n])
		require.NoError(t, err)
		deliveries = deliveries[n:]
	}
	assert.Equal(t, want, checksums(t, messy.Pool, p.Name(), p.Tables()...))
}

// Verify finds a projection equal to its replay, and counts the rows a damaged one has
// only live or only in the replay, without changing the live tables.
func TestVerifyComparesWithAReplay(t *testing.T) {
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	store := eventstore.NewStore(d.Pool)
	for range 5 {
		require.NoError(t, conversation(ctx, store, uuid.New(), 3))
	}
	all := readableLog(t, d.Pool)
	require.Len(t, all, 25)
	p := projections.Conversations{}
	_, err := projections.ApplyBatch(ctx, d.Pool, p, all)
	require.NoError(t, err)
	verify := func() projections.Comparison {
		c, err := (&projections.Rebuild{Pool: d.Pool, Projector: p, BatchSize: 4}).Verify(ctx, 0)
		require.NoError(t, err)
		return c
	}

	c := verify()
	assert.True(t, c.Equal, "%+v", c)
	require.Len(t, c.Tables, 3)
	assert.Equal(t, projections.TableComparison{Table: "conversations", Rows: 5}, c.Tables[0])
	assert.Equal(t, projections.TableComparison{Table: "messages", Rows: 20}, c.Tables[1])
	assert.Equal(t, projections.TableComparison{Table: "projection_streams", Rows: 20}, c.Tables[2])

	// A changed row, a lost row and a forgotten stream version.
	_, err = d.Pool.Exec(ctx, `UPDATE messages SET content = 'tampered' WHERE id = (SELECT id FROM messages ORDER BY id LIMIT 1)`)
	require.NoError(t, err)
	_, err = d.Pool.Exec(ctx, `DELETE FROM conversations WHERE id = (SELECT id FROM conversations ORDER BY id LIMIT 1)`)
	require.NoError(t, err)
	_, err = d.Pool.Exec(ctx, `DELETE FROM projection_streams WHERE stream_id = (SELECT stream_id FROM projection_streams
		WHERE projection = 'conversations' ORDER BY stream_id LIMIT 1)`)
	require.NoError(t, err)
	before := checksums(t, d.Pool, p.Name(), p.Tables()...)
	c = verify()
	assert.False(t, c.Equal)
	assert.Equal(t, projections.TableComparison{Table: "conversations", Rows: 4, OnlyLive: 0, OnlyRebuilt: 1}, c.Tables[0])
	assert.Equal(t, projections.TableComparison{Table: "messages", Rows: 20, OnlyLive: 1, OnlyRebuilt: 1}, c.Tables[1])
	assert.Equal(t, projections.TableComparison{Table: "projection_streams", Rows: 19, OnlyLive: 0, OnlyRebuilt: 1}, c.Tables[2])
	assert.Equal(t, before, checksums(t, d.Pool, p.Name(), p.Tables()...), "the live tables are left as they were")
	var schemas int
	require.NoError(t, d.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'verify_%'`).Scan(&schemas))
	assert.Zero(t, schemas, "the copies are dropped")

	// A live projector that catches up within the wait is found equal.
	e := all[len(all)-1]
	_, err = d.Pool.Exec(ctx, `DELETE FROM projection_streams WHERE projection = 'conversations'`)
	require.NoError(t, err)
	_, err = d.Pool.Exec(ctx, `TRUNCATE conversations, messages`)
	require.NoError(t, err)
	go func() {
		time.Sleep(1500 * time.Millisecond)
		_, _ = projections.ApplyBatch(ctx, d.Pool, p, all)
	}()
	c, err = (&projections.Rebuild{Pool: d.Pool, Projector: p}).Verify(ctx, 20*time.Second)
	require.NoError(t, err)
	assert.True(t, c.Equal, "equal once the live projector caught up (last event %s): %+v", e.ID, c)
}
