package reactors

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/command/domain"
	"github.com/chatbotsaas/chatbotd/events"
)

// Every responder and dead letter answers through the domain's one reply-once rule: a
// message waiting for its answer gets it, an answered or failed one gets nothing more.
func TestDecideAnswerIsTheDomainsReplyOnceRule(t *testing.T) {
	posted := domain.EvolveMessage(domain.Message{}, events.MessagePosted{})
	answered := domain.EvolveMessage(posted, events.MessageReplied{})
	failed := domain.EvolveMessage(posted, events.MessageFailed{})
	for _, answer := range []events.Event{events.MessageReplied{Content: "hi"}, events.MessageFailed{Code: events.FailureUndeliverable}} {
		evs, err := decideAnswer(posted, answer)
		require.NoError(t, err)
		assert.Equal(t, []events.Event{answer}, evs)
		for _, done := range []domain.Message{answered, failed} {
			evs, err := decideAnswer(done, answer)
			require.NoError(t, err)
			assert.Empty(t, evs, "a second answer to a %s message", done.Status)
		}
	}
	_, err := decideAnswer(domain.Message{}, events.MessageReplied{})
	assert.Error(t, err, "no message, no answer")
	_, err = decideAnswer(posted, events.ChatbotPublished{})
	assert.Error(t, err, "not an answer")
}
