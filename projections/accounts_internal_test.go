package projections

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
)

// TestCreatedEntryRefusesWhatTheRowCouldDiffer: a user.created is cached from its event
// only where the row it wrote is known from it; otherwise (another type, data that does
// not decode, no roles, no organization, a time finer than PostgreSQL keeps) the user is
// left to the read-back.
func TestCreatedEntryRefusesWhatTheRowCouldDiffer(t *testing.T) {
	org := uuid.New()
	at := time.Date(2026, 12, 7, 18, 0, 0, 123456000, time.UTC)
	envelope := func(typ, data string, org *uuid.UUID, at time.Time) events.Envelope {
		return events.Envelope{ID: uuid.New(), Type: typ, SchemaVersion: 1, StreamType: events.StreamUser, StreamID: uuid.New(),
			StreamVersion: 1, OrganizationID: org, OccurredAt: at, Data: json.RawMessage(data)}
	}
	const created = `{"name":"Ann","email":"ann@example.com","roles":["member"],"status":"active"}`
	for name, tc := range map[string]struct {
		e  events.Envelope
		ok bool
	}{
		"a user.created":       {envelope("user.created", created, &org, at), true},
		"another type":         {envelope("user.updated", `{"changes":{}}`, &org, at), false},
		"data that is no user": {envelope("user.created", `{"roles":"member"}`, &org, at), false},
		"no roles":             {envelope("user.created", `{"name":"Ann","email":"a@example.com","status":"active"}`, &org, at), false},
		"no organization":      {envelope("user.created", created, nil, at), false},
		"nanoseconds":          {envelope("user.created", created, &org, at.Add(time.Nanosecond)), false},
	} {
		entry, ok := createdEntry(tc.e)
		assert.Equal(t, tc.ok, ok, name)
		if !tc.ok {
			continue
		}
		assert.Equal(t, 1, entry.Version, name)
		var doc map[string]any
		require.NoError(t, json.Unmarshal(entry.Payload, &doc), name)
		assert.Equal(t, map[string]any{"id": tc.e.StreamID.String(), "organization_id": org.String(), "name": "Ann",
			"email": "ann@example.com", "status": "active", "roles": []any{"member"},
			"created_at": "2026-12-07T18:00:00.123456Z", "updated_at": "2026-12-07T18:00:00.123456Z"}, doc, name)
	}
}
