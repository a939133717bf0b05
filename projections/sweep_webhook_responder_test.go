package projections_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/broker"
	"github.com/chatbotsaas/chatbotd/internal/netguard"
	"github.com/chatbotsaas/chatbotd/internal/secretbox"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
	"github.com/chatbotsaas/chatbotd/projections"
	"github.com/chatbotsaas/chatbotd/projections/reactors"
)

// The webhook responder records no stream versions; the sweep reads what it did from the
// log (a message's answer). A message is the webhook responder's only once the
// knowledge-base responder has applied it and left it unanswered: before, the pass is
// put off. One lost on the way to the webhook responder is published again to its queue
// alone, a Hold after a first look found it unanswered with nothing waiting, and answered
// once. One the webhook responder is still answering (a slow workflow) when the sweep
// first looks is left alone: the workflow is called once.
func TestSweepRedrivesWhatTheWebhookResponderLost(t *testing.T) {
	ctx := context.Background()
	d, a := testenv.MustDatabase(t), testenv.MustAMQP(t)
	conn := broker.Dial(a.URL, testenv.Logger(t))
	t.Cleanup(func() { conn.Close() })
	store := eventstore.NewStore(d.Pool)

	var mu sync.Mutex
	calls := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in struct{ Content string }
		_ = json.NewDecoder(r.Body).Decode(&in)
		mu.Lock()
		calls[in.Content]++
		mu.Unlock()
		if in.Content == "slow" {
			time.Sleep(time.Second)
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"reply": "re: " + in.Content})
	}))
	t.Cleanup(srv.Close)
	called := func(content string) int {
		mu.Lock()
		defer mu.Unlock()
		return calls[content]
	}

	a.Queue(reactors.ResponderName)
	kb, err := projections.NewRunner(d.Pool, conn, reactors.Responder{Store: store}, projections.Config{Exchange: a.Exchange,
		QueuePrefix: a.QueuePrefix, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	hooks := broker.QueueSpec{Name: a.Queue(reactors.WebhookResponderName), Exchange: a.Exchange,
		Bindings: []string{"message.posted"}, DeliveryLimit: 3}
	// A queue taking every event, so that the relay's mandatory publishes route.
	all := broker.QueueSpec{Name: a.Queue("all"), Exchange: a.Exchange, Bindings: []string{"#"}, DeliveryLimit: 3}
	relay, err := eventstore.NewRelay(d.Pool, conn, eventstore.RelayConfig{Exchange: a.Exchange,
		Queues: []broker.QueueSpec{kb.Queue(), hooks, all}, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	t.Cleanup(run(relay.Run))
	box, err := secretbox.New(make([]byte, 32))
	require.NoError(t, err)
	responder := reactors.WebhookResponder{Store: store, Pool: d.Pool, Box: box, Attempts: 1,
		Client: reactors.WebhookClient(netguard.Guard{AllowPrivate: true}, 5*time.Second), Logger: testenv.Logger(t)}
	consumer := reactors.Consumer{Name: reactors.WebhookResponderName, Conn: conn, Queue: hooks, Workers: 2,
		Handle: responder.Handle, Logger: testenv.Logger(t)}

	sweep := &projections.Sweep{Pool: d.Pool, Broker: conn, Interval: time.Hour, Logger: testenv.Logger(t),
		WebhookResponder: &projections.WebhookSweep{Queue: hooks.Name, Hold: 2 * time.Second}}
	pass := func() projections.SweepPass {
		res, err := sweep.PassWebhookResponder(ctx)
		require.NoError(t, err)
		return res
	}
	// done passes until a pass is not put off, and returns it.
	done := func() projections.SweepPass {
		var res projections.SweepPass
		testenv.Eventually(t, 15*time.Second, func() error {
			if res = pass(); res.Postponed {
				return assert.AnError
			}
			return nil
		})
		return res
	}

	org, bot := uuid.New(), uuid.New()
	_, err = store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamChatbot, StreamID: bot, OrganizationID: &org,
		Events: []events.Event{events.ChatbotCreated{Name: "Workflow bot", Responder: events.Responder{Type: "webhook",
			URL: srv.URL + "/webhook", SecretSet: true}}}})
	require.NoError(t, err)
	_, err = d.Pool.Exec(ctx, `INSERT INTO chatbot_secrets (chatbot_id, sealed) VALUES ($1, $2)`, bot,
		box.Seal([]byte("n8n-shared-secret-0123456789"), bot[:]))
	require.NoError(t, err)
	post := func(content string) uuid.UUID {
		id := uuid.New()
		_, err := store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamMessage, StreamID: id, OrganizationID: &org,
			Events: []events.Event{events.MessagePosted{ConversationID: uuid.NewString(), ChatbotID: bot.String(), Content: content}}})
		require.NoError(t, err)
		waitPublished(t, d.Pool)
		return id
	}
	answered := func(message uuid.UUID) func() error {
		return func() error {
			var n int
			if err := d.Pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE stream_id = $1 AND stream_version = 2`, message).Scan(&n); err != nil || n == 0 {
				return assert.AnError
			}
			return nil
		}
	}

	require.Equal(t, projections.SweepPass{}, pass(), "the first pass starts at the relay's checkpoint")
	lost := post("lost")
	require.Equal(t, projections.SweepPass{}, pass(), "the second sets the stretch to check")
	_, ch := a.MustEventChannel(t)
	purged, err := ch.QueuePurge(hooks.Name, false)
	require.NoError(t, err)
	require.Equal(t, 1, purged, "the message waited in the webhook responder's queue")

	res := pass()
	assert.True(t, res.Postponed, "the knowledge-base responder has not applied the message: whose it is is not known")
	t.Cleanup(run(kb.Run))
	res = done()
	assert.Equal(t, 1, res.Redriven, "the lost message is published again")
	t.Cleanup(run(consumer.Run))
	testenv.Eventually(t, 15*time.Second, answered(lost))
	assert.Equal(t, 1, called("lost"))

	slow := post("slow") // the webhook responder is calling the workflow when the sweep looks
	testenv.Eventually(t, 5*time.Second, func() error {
		if called("slow") == 0 {
			return assert.AnError
		}
		return nil
	})
	assert.Zero(t, done().Redriven, "the stretch before the slow message")
	assert.Zero(t, done().Redriven, "the slow message is answered within the hold")
	testenv.Eventually(t, 5*time.Second, answered(slow))
	time.Sleep(500 * time.Millisecond)
	assert.Equal(t, 1, called("slow"), "the workflow is called once")
	var redriven int64
	require.NoError(t, d.Pool.QueryRow(ctx, `SELECT redriven FROM projection_sweeps WHERE name = $1`,
		reactors.WebhookResponderName).Scan(&redriven))
	assert.EqualValues(t, 1, redriven)
}
