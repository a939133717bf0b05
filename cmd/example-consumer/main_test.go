package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/broker"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// The example, against the real relay and RabbitMQ: it gets the events its pattern
// binds, in order, each once, and nothing else.
func TestConsumerGetsItsEventsOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d := testenv.MustDatabase(t)
	a := testenv.MustAMQP(t)
	queue := a.Queue("example")
	conn := broker.Dial(a.URL, testenv.Logger(t))
	defer conn.Close()
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	defer ch.Close()
	require.NoError(t, broker.DeclareEventExchange(ch, a.Exchange))

	var out bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{URL: a.URL, Exchange: a.Exchange, Queue: queue, Bindings: []string{"user.#"}, Max: 3}, &out)
	}()
	// Run binds before it consumes: once it consumes, the events below reach its queue.
	a.WaitConsumer(queue)

	store := eventstore.NewStore(d.Pool)
	relay, err := eventstore.NewRelay(d.Pool, conn, eventstore.RelayConfig{Exchange: a.Exchange, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	go relay.Run(ctx)
	org, user := uuid.New(), uuid.New()
	appendOne := func(stype string, id uuid.UUID, e events.Event) events.AppendResult {
		res, err := store.Append(ctx, eventstore.AppendRequest{StreamType: stype, StreamID: id, ExpectedVersion: eventstore.AnyVersion,
			OrganizationID: &org, Events: []events.Event{e}, Meta: events.Meta{Actor: events.Actor{Type: events.ActorSystem}}})
		require.NoError(t, err)
		return res
	}
	appendOne(events.StreamUser, user, events.UserCreated{Name: "Ann", Email: "ann@example.com", Roles: []string{"member"}, Status: "active"})
	appendOne(events.StreamConversation, uuid.New(), events.ConversationStarted{ChatbotID: uuid.NewString()})
	appendOne(events.StreamUser, user, events.UserUpdated{Changes: map[string]events.Change{"name": {Old: "Ann", New: "Anna"}}})
	// A redelivery of the first event.
	first, err := eventstore.ReadStream(ctx, d.Pool, user, 1, 1)
	require.NoError(t, err)
	body, err := json.Marshal(first[0])
	require.NoError(t, err)
	require.NoError(t, ch.PublishWithContext(ctx, "", queue, true, false, amqp.Publishing{Body: body}))
	appendOne(events.StreamUser, user, events.UserDeleted{})

	select {
	case err := <-done:
		require.NoError(t, err)
	case <-ctx.Done():
		t.Fatalf("consumer did not finish; printed:\n%s", out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 3, out.String())
	for i, want := range []string{"user.created", "user.updated", "user.deleted"} {
		assert.Contains(t, lines[i], " "+want+" "+user.String()+" v", lines[i])
	}
	assert.NotContains(t, out.String(), "conversation.started")
}
