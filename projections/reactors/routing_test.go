package reactors_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/netguard"
	"github.com/chatbotsaas/chatbotd/internal/secretbox"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
	"github.com/chatbotsaas/chatbotd/projections"
	"github.com/chatbotsaas/chatbotd/projections/reactors"
)

// A message is answered by the responder its chatbot had when it was posted, in commit
// order, whichever the chatbot has when each responder looks. Switched between the two
// responders' looks, the message was skipped by both (each saw the other's type) and
// stayed unanswered; now exactly one answers it, the other skips it, in either order.
func TestAMessageIsAnsweredByTheResponderItWasPostedTo(t *testing.T) {
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	store := eventstore.NewStore(d.Pool)
	defer store.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"reply": "from the workflow"})
	}))
	t.Cleanup(srv.Close)
	box, err := secretbox.New(make([]byte, 32))
	require.NoError(t, err)
	hooks := reactors.WebhookResponder{Store: store, Pool: d.Pool, Box: box, Attempts: 1,
		Client: reactors.WebhookClient(netguard.Guard{AllowPrivate: true}, 5*time.Second), Logger: testenv.Logger(t)}
	kb := reactors.Responder{Store: store}
	webhook := events.Responder{Type: "webhook", URL: srv.URL + "/webhook", SecretSet: true}
	knowledge := events.Responder{Type: "knowledge_base"}

	// between: the switch comes between the two responders' looks (where both skipped the
	// message), else before both.
	for _, c := range []struct {
		name         string
		posted, now  events.Responder
		source       string
		webhookFirst bool
		between      bool
	}{
		{"posted to the webhook, turned to the knowledge base", webhook, knowledge, "webhook", false, false},
		{"posted to the webhook, turned to the knowledge base, the webhook responder first", webhook, knowledge, "webhook", true, false},
		{"posted to the webhook, turned to the knowledge base between the looks", webhook, knowledge, "webhook", false, true},
		{"posted to the knowledge base, turned to a webhook", knowledge, webhook, "fallback", false, false},
		{"posted to the knowledge base, turned to a webhook, the webhook responder first", knowledge, webhook, "fallback", true, false},
		{"posted to the knowledge base, turned to a webhook between the looks", knowledge, webhook, "fallback", true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			appendOne := appender(t, store, uuid.New())
			bot, conv := uuid.New(), uuid.New()
			appendOne(events.StreamChatbot, bot, events.ChatbotCreated{Name: "b", FallbackMessage: "no idea", Responder: c.posted})
			_, err := d.Pool.Exec(ctx, `INSERT INTO chatbot_secrets (chatbot_id, sealed) VALUES ($1, $2)`, bot,
				box.Seal([]byte("n8n-shared-secret-0123456789"), bot[:]))
			require.NoError(t, err)
			appendOne(events.StreamConversation, conv, events.ConversationStarted{ChatbotID: bot.String()})
			m := appendOne(events.StreamMessage, uuid.New(), events.MessagePosted{ConversationID: conv.String(), ChatbotID: bot.String(), Content: "hello"})
			now := c.now
			turn := func() { appendOne(events.StreamChatbot, bot, events.ChatbotUpdated{Responder: &now}) }
			if !c.between {
				turn()
			}

			body, err := json.Marshal(m)
			require.NoError(t, err)
			looks := []func(){
				func() {
					_, err := projections.ApplyBatch(ctx, d.Pool, kb, []events.Envelope{m})
					require.NoError(t, err)
				},
				func() { require.NoError(t, hooks.Handle(message.NewMessage(uuid.NewString(), body))) },
			}
			if c.webhookFirst {
				looks[0], looks[1] = looks[1], looks[0]
			}
			for i, look := range looks {
				if i == 1 && c.between {
					turn()
				}
				look()
			}
			answers, err := store.ReadStream(ctx, m.StreamID, 2, 0)
			require.NoError(t, err)
			require.Len(t, answers, 1, "answered once")
			ev, err := answers[0].Decode()
			require.NoError(t, err)
			require.IsType(t, events.MessageReplied{}, ev)
			assert.Equal(t, c.source, ev.(events.MessageReplied).Source)
		})
	}
}
