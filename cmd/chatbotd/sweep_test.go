package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
	"github.com/chatbotsaas/chatbotd/projections"
	"github.com/chatbotsaas/chatbotd/projections/reactors"
)

// The whole binary sweeps: with the projectors in a process of their own, a user whose
// events the broker confirmed and then lost from the projectors' queue (purged while that
// process was down) becomes readable once it runs again, published again from the log by
// its sweep, and the status counts the events.
func TestServeSweepsWhatTheBrokerLost(t *testing.T) {
	a := startAppWith(t, []string{"serve", "--roles", "api,relay"}, "PROJECTOR_SWEEP_INTERVAL=200ms")
	stop := sweptProjectors(t, a)
	_, token := a.register("Swept", "Owner", "owner@swept.example")
	swept(t, a, projections.GroupName)
	stop()

	lost, _ := a.createUser(token, "Lost", "lost@swept.example", "member", nil)
	lose(t, a, projections.GroupName, "the user's events waited in the projectors' queue")

	sweptProjectors(t, a)
	testenv.Eventually(t, 15*time.Second, func() error {
		if r := a.do(req{method: "GET", path: "/api/v1/users/" + lost.ID, token: token}); r.Status != 200 {
			return fmt.Errorf("the lost user reads %d", r.Status)
		}
		return nil
	})
	assert.Positive(t, sweepStatus(t, a, projections.GroupName).EventsRedriven)
}

// A message to a webhook chatbot that the broker confirmed and then lost on its way to
// the webhook responder (purged from its queue while the projectors' process was down)
// is answered once that process runs again: the knowledge-base responder applies it and
// leaves it to the webhook responder, and the sweep publishes it again to the webhook
// responder's queue once, a call's longest later, it is still unanswered. The workflow
// is called once, and the status counts the message.
func TestServeSweepsAWebhookMessageTheBrokerLost(t *testing.T) {
	a := startAppWith(t, []string{"serve", "--roles", "api,relay"}, "PROJECTOR_SWEEP_INTERVAL=200ms",
		"ALLOW_PRIVATE_TARGETS=true", "WEBHOOK_TIMEOUT=500ms", "WEBHOOK_ATTEMPTS=1")
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in struct{ Content string }
		_ = json.NewDecoder(r.Body).Decode(&in)
		calls.Add(1)
		_ = json.NewEncoder(w).Encode(map[string]string{"reply": "n8n says: " + in.Content})
	}))
	defer srv.Close()

	stop := sweptProjectors(t, a)
	_, token := a.register("Hooked", "Owner", "owner@hooked.example")
	var bot, conv struct{ ID string }
	a.expect(req{method: "POST", path: "/api/v1/chatbots", token: token, body: map[string]any{"name": "Workflow bot",
		"responder": map[string]any{"type": "webhook", "url": srv.URL + "/webhook", "secret": "n8n-shared-secret-0123456789"}}}, 201).data(t, &bot)
	a.expect(req{method: "POST", path: "/api/v1/chatbots/" + bot.ID + "/publish", token: token}, 200)
	a.expect(req{method: "POST", path: "/api/v1/chatbots/" + bot.ID + "/conversations", token: token}, 201).data(t, &conv)
	swept(t, a, reactors.WebhookResponderName)
	stop()

	a.expect(req{method: "POST", path: "/api/v1/conversations/" + conv.ID + "/messages", token: token, body: map[string]any{"content": "hello"}}, 202)
	lose(t, a, reactors.WebhookResponderName, "the message waited in the webhook responder's queue")

	sweptProjectors(t, a)
	msgs := replies(t, a, token, conv.ID, 2)
	assert.Equal(t, "n8n says: hello", msgs[1].Content)
	assert.EqualValues(t, 1, calls.Load(), "the workflow is called once")
	assert.EqualValues(t, 1, sweepStatus(t, a, reactors.WebhookResponderName).EventsRedriven)
}

// sweptProjectors starts a process of the projectors, with a.env, and returns what stops
// it (also at the test's end). It does not listen: serve's helper would wait for it.
func sweptProjectors(t *testing.T, a *app) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	m := &Main{Stdout: io.Discard, Stderr: io.Discard, Environ: a.env}
	go func() { done <- m.Run(ctx, []string{"serve", "--roles", "projectors"}) }()
	stop := sync.OnceFunc(func() {
		cancel()
		assert.NoError(t, <-done)
	})
	t.Cleanup(stop)
	return stop
}

// sweepStatus is the status line of the consumer called name.
func sweepStatus(t *testing.T, a *app, name string) projections.Status {
	t.Helper()
	out, err := a.cli("", "projections", "status", "--json")
	require.NoError(t, err)
	var st Projections
	require.NoError(t, json.Unmarshal([]byte(out), &st))
	for _, p := range st.Projections {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no %s line in %s", name, out)
	return projections.Status{}
}

// swept waits until the sweep has finished a pass over the consumer called name.
func swept(t *testing.T, a *app, name string) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() error {
		if sweepStatus(t, a, name).SweptAt == nil {
			return fmt.Errorf("the sweep has not finished a pass over %s", name)
		}
		return nil
	})
}

// lose waits until the relay has published every event, then purges the queue of the
// consumer called name, as a broker losing what it confirmed would; why says what the
// queue held.
func lose(t *testing.T, a *app, name, why string) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() error {
		st, err := eventstore.RelayLag(context.Background(), a.db.Pool, "")
		if err == nil && st.Behind > 0 {
			err = fmt.Errorf("%d events not published", st.Behind)
		}
		return err
	})
	conn, err := amqp091.Dial(a.mq.URL)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	purged, err := ch.QueuePurge(a.mq.QueuePrefix+name, false)
	require.NoError(t, err)
	require.Positive(t, purged, why)
}
