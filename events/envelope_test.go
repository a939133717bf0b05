package events_test

import (
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"

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
