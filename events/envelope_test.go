package events_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
)

// Every event a consumer appends in reaction to another carries the cause's correlation
// and request, and names the cause (one helper: the copies had drifted).
func TestCausedBy(t *testing.T) {
	e := events.Envelope{ID: uuid.New(), CorrelationID: "corr-1", RequestID: "req-1"}
	m := events.CausedBy(e)
	assert.Equal(t, events.Actor{Type: events.ActorSystem}, m.Actor)
	assert.Equal(t, "corr-1", m.CorrelationID)
	assert.Equal(t, "req-1", m.RequestID)
	assert.Equal(t, e.ID.String(), m.CausationID)
}

// An absent correlation or causation id is null in JSON, never "", and reads back as
// absent; a present one is a string.
func TestAbsentIDsAreNull(t *testing.T) {
	e := events.Envelope{ID: uuid.New(), Type: "user.created", SchemaVersion: 1, StreamType: "user", StreamID: uuid.New(),
		StreamVersion: 1, Position: 1, Data: json.RawMessage(`{}`), CorrelationID: "req-1"}
	raw, err := json.Marshal(e)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(raw, &m))
	assert.Equal(t, "req-1", m["correlation_id"])
	v, present := m["causation_id"]
	assert.True(t, present, "the field is there")
	assert.Nil(t, v, "as null")
	back, err := events.DecodeEnvelope(raw)
	require.NoError(t, err)
	assert.Equal(t, "", back.CausationID)
	assert.Equal(t, "req-1", back.CorrelationID)

	a, err := events.AuditEntryOf(events.Envelope{ID: uuid.New(), Type: "user.created", StreamType: "user", StreamID: uuid.New(),
		StreamVersion: 1, Data: json.RawMessage(`{}`)})
	require.NoError(t, err)
	raw, err = json.Marshal(a)
	require.NoError(t, err)
	assert.Contains(t, string(raw), `"correlation_id":null`)
	assert.Contains(t, string(raw), `"causation_id":null`)
}

// The relay publishes e.MarshalJSON() rather than json.Marshal(e), which runs the same
// method and then checks and compacts its output once more: the bytes must be the same,
// whitespace, HTML characters and line separators in the data included.
func TestMarshalJSONWritesWhatJSONMarshalWrites(t *testing.T) {
	org, actor, store := uuid.New(), uuid.New(), uuid.New()
	for name, e := range map[string]events.Envelope{
		"root event": {ID: uuid.New(), Type: "chatbot.created", SchemaVersion: 1, StreamType: "chatbot", StreamID: uuid.New(),
			StreamVersion: 1, Position: 7, OrganizationID: &org, Actor: events.Actor{Type: events.ActorUser, ID: &actor},
			RequestID: "req", Data: json.RawMessage(`{"name": "A <b>bot</b> & co", "note": "line\u2028sep",` + "\n" + `  "n": [1, 2]}`)},
		"caused, with a store": {ID: uuid.New(), Type: "message.replied", SchemaVersion: 2, StreamType: "message", StreamID: uuid.New(),
			StreamVersion: 3, CorrelationID: "corr", CausationID: uuid.NewString(), Metadata: events.Metadata{IPAddress: "127.0.0.1",
				UserAgent: "agent <1>"}, Actor: events.Actor{Type: events.ActorSystem}, Data: json.RawMessage(`{}`), StoreID: &store},
	} {
		want, err := json.Marshal(e)
		require.NoError(t, err, name)
		got, err := e.MarshalJSON()
		require.NoError(t, err, name)
		assert.Equal(t, string(want), string(got), name)
	}
}

// A frame is the envelopes' encoding in a JSON array: it decodes into the same envelopes,
// in order, each checked as a single one is; an empty frame, or one with an event that
// does not decode, is rejected whole.
func TestFramesDecodeIntoTheirEnvelopes(t *testing.T) {
	org := uuid.New()
	var want []events.Envelope
	var frame []byte
	for v := 1; v <= 3; v++ {
		e := events.Envelope{ID: uuid.New(), Type: "user.role_assigned", SchemaVersion: 1, StreamType: events.StreamUser,
			StreamID: uuid.New(), StreamVersion: v, Position: int64(v), OrganizationID: &org,
			OccurredAt: time.Date(2026, 12, 6, 10, 0, v, 0, time.UTC), CorrelationID: "c", Data: json.RawMessage(`{"role":"member"}`)}
		body, err := e.MarshalJSON()
		require.NoError(t, err)
		frame = events.AppendFrame(frame, body)
		want = append(want, e)
	}
	got, err := events.DecodeFrame(events.CloseFrame(frame))
	require.NoError(t, err)
	require.Len(t, got, 3)
	for i := range want {
		single, err := want[i].MarshalJSON()
		require.NoError(t, err)
		again, err := got[i].MarshalJSON()
		require.NoError(t, err)
		assert.JSONEq(t, string(single), string(again), "event %d", i)
	}
	for name, body := range map[string]string{
		"empty":        `[]`,
		"not an array": string(frame[1:]),
		"no id":        `[{"type":"user.created","stream_id":"` + uuid.NewString() + `","stream_version":1,"data":{}}]`,
	} {
		_, err := events.DecodeFrame([]byte(body))
		assert.Error(t, err, name)
	}
}
