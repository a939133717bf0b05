package events_test

import (
	"encoding/json"
	"testing"

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
