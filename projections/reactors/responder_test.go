package reactors_test

import (
	"context"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
	"github.com/chatbotsaas/chatbotd/projections"
	"github.com/chatbotsaas/chatbotd/projections/reactors"
)

func TestResponderAnswersOnce(t *testing.T) {
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	store := eventstore.NewStore(d.Pool)
	defer store.Close()
	org, bot, conv := uuid.New(), uuid.New(), uuid.New()
	appendOne := appender(t, store, org)
	appendOne(events.StreamChatbot, bot, events.ChatbotCreated{Name: "b", FallbackMessage: "no idea", Responder: events.Responder{Type: "knowledge_base"}})
	appendOne(events.StreamConversation, conv, events.ConversationStarted{ChatbotID: bot.String()})
	_, err := d.Pool.Exec(ctx, `INSERT INTO knowledge_index (chatbot_id, entry_id, question, answer) VALUES ($1, $2, 'What is the price?', '10 euros')`, bot, uuid.New())
	require.NoError(t, err)
	post := func(content string) events.Envelope {
		return appendOne(events.StreamMessage, uuid.New(), events.MessagePosted{ConversationID: conv.String(), ChatbotID: bot.String(), Content: content})
	}
	replies := func(msg uuid.UUID) []events.Envelope {
		envs, err := store.ReadStream(ctx, msg, 2, 0)
		require.NoError(t, err)
		return envs
	}
	r := reactors.Responder{Store: store}

	// Delivered again after its reply committed (a worker killed before it acked): one reply.
	m := post("what is the price?")
	for i := 0; i < 2; i++ {
		_, err := projections.ApplyBatch(ctx, d.Pool, r, []events.Envelope{m})
		require.NoError(t, err)
	}
	got := replies(m.StreamID)
	require.Len(t, got, 1)
	ev, err := got[0].Decode()
	require.NoError(t, err)
	assert.Equal(t, "10 euros", ev.(events.MessageReplied).Content)
	assert.Equal(t, reactors.ReplyID(m.StreamID).String(), ev.(events.MessageReplied).ReplyID)

	// Two workers racing for one message: one reply.
	m2 := post("what is the price?")
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = projections.ApplyBatch(ctx, d.Pool, r, []events.Envelope{m2})
		}()
	}
	wg.Wait()
	assert.Len(t, replies(m2.StreamID), 1)

	// Dead-lettered: a message not answered becomes failed; an answered one stays answered.
	m3 := post("anything")
	r.DeadLettered(ctx, m3, assert.AnError)
	got = replies(m3.StreamID)
	require.Len(t, got, 1)
	assert.Equal(t, "message.failed", got[0].Type)
	r.DeadLettered(ctx, m, assert.AnError)
	assert.Len(t, replies(m.StreamID), 1)
}

// appender appends one event of org's to a stream of store and returns its envelope.
func appender(t *testing.T, store *eventstore.Store, org uuid.UUID) func(stype string, id uuid.UUID, ev events.Event) events.Envelope {
	return func(stype string, id uuid.UUID, ev events.Event) events.Envelope {
		t.Helper()
		ctx := context.Background()
		_, err := store.Append(ctx, eventstore.AppendRequest{StreamType: stype, StreamID: id, ExpectedVersion: eventstore.AnyVersion,
			OrganizationID: &org, Events: []events.Event{ev}, Meta: events.Meta{Actor: events.Actor{Type: events.ActorSystem}}})
		require.NoError(t, err)
		envs, err := store.ReadStream(ctx, id, 1, 0)
		require.NoError(t, err)
		return envs[len(envs)-1]
	}
}
