package projections_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/broker"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
	"github.com/chatbotsaas/chatbotd/projections"
)

// Every event type of the catalog, published by the relay and then every one of them
// published again (a redelivery), ends up exactly once in the audit trail, and each
// organization has as many entries as events.
func TestAuditEveryEventTypeExactlyOnceOverRabbitMQ(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := testenv.MustDatabase(t)
	a := testenv.MustAMQP(t)
	a.Queue(projections.AuditName)
	store := eventstore.NewStore(d.Pool)
	conn := broker.Dial(a.URL, testenv.Logger(t))
	defer conn.Close()

	runner, err := projections.NewRunner(d.Pool, conn, projections.Audit{}, projections.Config{
		Exchange: a.Exchange, QueuePrefix: a.QueuePrefix, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	relay, err := eventstore.NewRelay(d.Pool, conn, eventstore.RelayConfig{Exchange: a.Exchange, Queues: []broker.QueueSpec{runner.Queue()},
		Logger: testenv.Logger(t)})
	require.NoError(t, err)

	orgs := []uuid.UUID{uuid.New(), uuid.New()}
	catalog := events.Catalog()
	for i, spec := range catalog {
		org := orgs[i%2]
		actor := uuid.New()
		_, err := store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamTypeOf(spec.Type), StreamID: uuid.New(),
			OrganizationID: &org, Events: []events.Event{spec.Zero()},
			Meta: events.Meta{Actor: events.Actor{Type: events.ActorUser, ID: &actor}, RequestID: "req-" + spec.Type,
				Metadata: events.Metadata{IPAddress: "203.0.113.9", UserAgent: "audit-test/1.0"}}})
		require.NoError(t, err)
	}
	go relay.Run(ctx)
	go runner.Run(ctx)

	count := func() (n int) {
		require.NoError(t, d.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_entries`).Scan(&n))
		return n
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		if n := count(); n != len(catalog) {
			return fmt.Errorf("%d of %d audit entries", n, len(catalog))
		}
		return nil
	})

	// Deliver everything again, straight to the queue.
	all, _, err := eventstore.ReadHistory(ctx, d.Pool, eventstore.HistoryFilter{}, eventstore.Checkpoint{}, 1000)
	require.NoError(t, err)
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	defer ch.Close()
	require.NoError(t, ch.Confirm(false))
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, len(all)))
	for _, e := range all {
		body, err := json.Marshal(e)
		require.NoError(t, err)
		require.NoError(t, ch.PublishWithContext(ctx, "", runner.Queue().Name, true, false,
			amqp.Publishing{ContentType: "application/json", MessageId: e.ID.String(), Body: body}))
	}
	for range all {
		require.True(t, (<-confirms).Ack)
	}
	// A last event, published after the duplicates are queued: once its entry is there,
	// the queue (first in, first out) has been worked through.
	org := orgs[0]
	_, err = store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamUser, StreamID: uuid.New(), OrganizationID: &org,
		Events: []events.Event{events.UserDeleted{}}, Meta: system})
	require.NoError(t, err)
	testenv.Eventually(t, 20*time.Second, func() error {
		if n := count(); n != len(catalog)+1 {
			return fmt.Errorf("%d of %d audit entries", n, len(catalog)+1)
		}
		return nil
	})
	time.Sleep(100 * time.Millisecond)
	assert.Equal(t, len(catalog)+1, count())

	rows, err := d.Pool.Query(ctx, `SELECT action, count(*) FROM audit_entries GROUP BY action`)
	require.NoError(t, err)
	perType := map[string]int{}
	for rows.Next() {
		var action string
		var n int
		require.NoError(t, rows.Scan(&action, &n))
		perType[action] = n
	}
	require.NoError(t, rows.Err())
	for _, spec := range catalog {
		want := 1
		if spec.Type == "user.deleted" {
			want = 2 // and the last event's
		}
		assert.Equal(t, want, perType[spec.Type], spec.Type)
	}
	for _, org := range orgs {
		var evs, entries int
		require.NoError(t, d.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM events WHERE organization_id = $1),
			(SELECT count(*) FROM audit_entries WHERE organization_id = $1)`, org).Scan(&evs, &entries))
		assert.Equal(t, evs, entries)
	}
	// Each entry carries who, from where, on what.
	var e events.AuditEntry
	e, err = eventstore.ScanAuditEntry(d.Pool.QueryRow(ctx, `SELECT `+eventstore.AuditColumns+` FROM audit_entries WHERE action = 'user.updated'`))
	require.NoError(t, err)
	assert.Equal(t, "user", e.ActorType)
	assert.NotNil(t, e.ActorID)
	assert.Equal(t, "user", e.SubjectType)
	assert.Equal(t, "req-user.updated", e.RequestID)
	if assert.NotNil(t, e.IPAddress) && assert.NotNil(t, e.UserAgent) {
		assert.Equal(t, "203.0.113.9", *e.IPAddress)
		assert.Equal(t, "audit-test/1.0", *e.UserAgent)
	}
}

func TestAuditChangesShowOldAndNewAndRedactSecrets(t *testing.T) {
	e := events.Envelope{ID: uuid.New(), Type: "user.updated", StreamType: "user", StreamID: uuid.New(), StreamVersion: 2,
		Data: json.RawMessage(`{"changes": {"name": {"old": "Ann", "new": "Anna"}}, "password": "hunter2",
			"webhook": {"secret": "s3cr3t", "secret_set": true, "url": "https://example.com"}}`)}
	a, err := events.AuditEntryOf(e)
	require.NoError(t, err)
	assert.JSONEq(t, `{"name": {"old": "Ann", "new": "Anna"}, "password": "[REDACTED]",
		"webhook": {"secret": "[REDACTED]", "secret_set": true, "url": "https://example.com"}}`, string(a.Changes))
}

// An organization's steady stream of entries, written by the audit projector in batches
// as the runtime does, leaves the audit log's ordered indexes about as dense as indexes
// built at once over the same entries. Declared newest first (DESC), each entry went in
// at its group's start and every page split left a half-empty page behind: the
// organization's time index was 1.7 times the size of one built at once.
func TestAuditIndexesStayDenseUnderAStreamOfEntries(t *testing.T) {
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	org, actor := uuid.New(), uuid.New()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const batches, perBatch = 200, 50
	for b := range batches {
		envs := make([]events.Envelope, perBatch)
		for i := range envs {
			n := b*perBatch + i
			envs[i] = events.Envelope{ID: uuid.New(), Type: events.UserRoleAssigned{}.EventType(), SchemaVersion: 1,
				StreamType: events.StreamUser, StreamID: uuid.New(), StreamVersion: 1, Position: int64(n + 1),
				OrganizationID: &org, OccurredAt: start.Add(time.Duration(n) * time.Millisecond),
				Actor: events.Actor{Type: events.ActorUser, ID: &actor}, RequestID: "req", CorrelationID: "req",
				Data: json.RawMessage(`{"role":"member"}`)}
		}
		tx, err := d.Pool.Begin(ctx)
		require.NoError(t, err)
		require.NoError(t, projections.Audit{}.ApplySet(ctx, tx, envs))
		require.NoError(t, tx.Commit(ctx))
	}
	for _, index := range []string{"audit_entries_org_time_idx", "audit_entries_org_action_idx", "audit_entries_org_actor_idx"} {
		var def string
		require.NoError(t, d.Pool.QueryRow(ctx, `SELECT pg_get_indexdef($1::regclass)`, index).Scan(&def))
		copyDef := strings.Replace(strings.Replace(def, " "+index+" ", " dense_copy ", 1), " public.audit_entries ", " public.audit_copy ", 1)
		var grown, built int64
		require.NoError(t, d.Pool.QueryRow(ctx, `SELECT pg_relation_size($1::regclass)`, index).Scan(&grown))
		_, err := d.Pool.Exec(ctx, `CREATE TABLE audit_copy AS SELECT * FROM audit_entries`)
		require.NoError(t, err)
		_, err = d.Pool.Exec(ctx, copyDef)
		require.NoError(t, err, copyDef)
		require.NoError(t, d.Pool.QueryRow(ctx, `SELECT pg_relation_size('dense_copy')`).Scan(&built))
		_, err = d.Pool.Exec(ctx, `DROP TABLE audit_copy`)
		require.NoError(t, err)
		t.Logf("%s: %d pages grown, %d built at once", index, grown/8192, built/8192)
		assert.LessOrEqual(t, float64(grown), 1.25*float64(built), "%s grew to %d bytes; built at once, %d", index, grown, built)
	}
}
