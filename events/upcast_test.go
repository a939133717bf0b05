package events_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
	"github.com/chatbotsaas/chatbotd/projections"
)

func spec(t *testing.T, eventType string) events.Spec {
	t.Helper()
	for _, s := range events.Catalog() {
		if s.Type == eventType {
			return s
		}
	}
	t.Fatalf("%s is not in the catalog", eventType)
	return events.Spec{}
}

// Every older version of every type can be brought to the current one.
func TestEveryOlderSchemaVersionHasAnUpcaster(t *testing.T) {
	versioned := 0
	for _, s := range events.Catalog() {
		want := []int(nil)
		for v := 1; v < s.SchemaVersion; v++ {
			want = append(want, v)
		}
		assert.Equal(t, want, events.UpcastsFrom(s.Type), s.Type)
		if s.SchemaVersion > 1 {
			versioned++
		}
	}
	assert.Positive(t, versioned, "at least one type has evolved (message.failed)")
}

// message.failed v1 (reason only) reads as v2 (with the required code); the result is
// valid against the current schema, which v1 data is not.
func TestMessageFailedVersion1IsReadAsVersion2(t *testing.T) {
	s := spec(t, "message.failed")
	require.Equal(t, 2, s.SchemaVersion)
	sch := compile(t, s)
	for reason, code := range map[string]string{
		"the chatbot was deleted":            events.FailureChatbotDeleted,
		"the message could not be answered":  events.FailureUndeliverable,
		"the webhook secret cannot be read":  events.FailureWebhookSecret,
		"webhook: status 500":                events.FailureWebhookError,
		"webhook: context deadline exceeded": events.FailureWebhookError,
		"cancelled":                          events.FailureWebhookError,
	} {
		v1 := map[string]any{"conversation_id": "c", "chatbot_id": "b", "reason": reason}
		assert.Error(t, validate(t, sch, v1), "v1 data is not v2 data")
		data, _ := json.Marshal(v1)
		env := events.Envelope{ID: uuid.New(), Type: "message.failed", SchemaVersion: 1, StreamType: events.StreamMessage,
			StreamID: uuid.New(), StreamVersion: 2, Data: data}
		body, _ := json.Marshal(env)
		got, err := events.DecodeEnvelope(body) // a v1 envelope still in a queue after an upgrade
		require.NoError(t, err)
		assert.Equal(t, 2, got.SchemaVersion)
		var m map[string]any
		require.NoError(t, json.Unmarshal(got.Data, &m))
		assert.NoError(t, validate(t, sch, m), reason)
		ev, err := got.Decode()
		require.NoError(t, err)
		assert.Equal(t, events.MessageFailed{ConversationID: "c", ChatbotID: "b", Code: code, Reason: reason}, ev, reason)
		// Decoding v1 data directly upcasts as well.
		ev, err = env.Decode()
		require.NoError(t, err)
		assert.Equal(t, code, ev.(events.MessageFailed).Code)
	}
	// A version newer than this build knows is refused, not misread.
	_, err := events.Envelope{ID: uuid.New(), Type: "message.failed", SchemaVersion: 3, Data: []byte(`{}`)}.Decode()
	assert.ErrorContains(t, err, "newer")
}

// A v1 event stored by an older build: every read of the store (a stream, the history the
// relay, /events, replay and rebuilds use) gives v2, while the tamper-evidence chain,
// taken over the stored row, still verifies.
func TestStoredOldVersionIsReadAsCurrentAndStillVerifies(t *testing.T) {
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	org, msg := uuid.New(), uuid.New()
	s := eventstore.NewStore(d.Pool)
	_, err := s.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamMessage, StreamID: msg, OrganizationID: &org,
		Events: []events.Event{events.MessagePosted{ConversationID: "c", ChatbotID: "b", Content: "hello"}},
		Meta:   events.Meta{Actor: events.Actor{Type: events.ActorSystem}}})
	require.NoError(t, err)
	old := uuid.New()
	_, err = d.Pool.Exec(ctx, `INSERT INTO events (id, stream_type, stream_id, stream_version, type, schema_version,
		organization_id, actor_type, data, occurred_at) VALUES ($1, 'message', $2, 2, 'message.failed', 1, $3, 'system', $4, now())`,
		old, msg, org, `{"conversation_id": "c", "chatbot_id": "b", "reason": "the chatbot was deleted"}`)
	require.NoError(t, err)

	check := func(e events.Envelope) {
		t.Helper()
		assert.Equal(t, old, e.ID)
		assert.Equal(t, 2, e.SchemaVersion)
		assert.JSONEq(t, `{"conversation_id": "c", "chatbot_id": "b", "code": "chatbot_deleted", "reason": "the chatbot was deleted"}`, string(e.Data))
	}
	stream, err := s.ReadStream(ctx, msg, 2, 2)
	require.NoError(t, err)
	require.Len(t, stream, 1)
	check(stream[0])
	var history []events.Envelope
	testenv.Eventually(t, 10*time.Second, func() error {
		history, _, err = eventstore.ReadHistory(ctx, d.Pool, eventstore.HistoryFilter{StreamID: &msg}, eventstore.Checkpoint{}, 10)
		if err != nil || len(history) != 2 {
			return fmt.Errorf("%d events readable (%v)", len(history), err)
		}
		return nil
	})
	check(history[1])
	// The envelope the relay publishes carries v2.
	body, err := json.Marshal(history[1])
	require.NoError(t, err)
	published, err := events.DecodeEnvelope(body)
	require.NoError(t, err)
	check(published)

	// The chain hashes the stored v1 row; verification reads it again and agrees.
	ch := &eventstore.Chainer{Pool: d.Pool, Key: chainKey}
	testenv.Eventually(t, 10*time.Second, func() error {
		n, err := ch.Step(ctx)
		if err == nil && n == 0 {
			var links int
			if err := d.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_chain`).Scan(&links); err != nil || links != 2 {
				return fmt.Errorf("%d links (%v)", links, err)
			}
		}
		return err
	})
	_, err = projections.ApplyBatch(ctx, d.Pool, projections.Audit{}, history)
	require.NoError(t, err)
	rep, err := eventstore.VerifyChain(ctx, d.Pool, org, chainKey)
	require.NoError(t, err)
	assert.True(t, rep.OK, "%+v", rep)
	assert.EqualValues(t, 2, rep.Checked)
	// The stored row is untouched: the log is never rewritten.
	var version int
	var data string
	require.NoError(t, d.Pool.QueryRow(ctx, `SELECT schema_version, data::text FROM events WHERE id = $1`, old).Scan(&version, &data))
	assert.Equal(t, 1, version)
	assert.NotContains(t, data, "code")
	// The hash is the stored v1 row's, so that a later build (another upcaster, a v3) or
	// an outside verifier working from the rows computes the same one.
	asStored := published // decoded from JSON: no stored form of its own
	asStored.SchemaVersion, asStored.Data = 1, json.RawMessage(data)
	assert.Equal(t, events.EventHash(asStored), events.EventHash(history[1]))
	assert.NotEqual(t, events.EventHash(published), events.EventHash(history[1]))
}
