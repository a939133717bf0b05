package reactors_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/broker"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
	"github.com/chatbotsaas/chatbotd/projections/reactors"
)

// Through a real quorum queue: a message that fails on every delivery is told to
// DeadLettered once, on its last delivery, and then lies in the dead-letter queue.
func TestConsumerTellsTheLastFailedDeliveryOnce(t *testing.T) {
	a := testenv.MustAMQP(t)
	spec := broker.QueueSpec{Name: a.Queue("last-try"), Exchange: a.Exchange, Bindings: []string{"message.posted"}, DeliveryLimit: 2}
	conn := broker.Dial(a.URL, slog.New(slog.DiscardHandler))
	defer conn.Close()
	var mu sync.Mutex
	var deliveries int
	var told []uuid.UUID
	c := reactors.Consumer{Conn: conn, Queue: spec, Workers: 1, Logger: slog.New(slog.DiscardHandler),
		Handle: func(*message.Message) error {
			mu.Lock()
			deliveries++
			mu.Unlock()
			return errors.New("the webhook is down")
		},
		DeadLettered: func(_ context.Context, e events.Envelope, _ error) {
			mu.Lock()
			told = append(told, e.ID)
			mu.Unlock()
		}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	a.WaitConsumer(spec.Name)

	id := uuid.New()
	body, err := json.Marshal(events.Envelope{ID: id, Type: "message.posted", SchemaVersion: 1, StreamType: events.StreamMessage,
		StreamID: uuid.New(), StreamVersion: 1, Position: 1, OccurredAt: time.Now().UTC(), Data: json.RawMessage(`{}`)})
	require.NoError(t, err)
	raw, err := amqp.Dial(a.URL)
	require.NoError(t, err)
	defer raw.Close()
	ch, err := raw.Channel()
	require.NoError(t, err)
	require.NoError(t, ch.Publish(a.Exchange, "message.posted", true, false, amqp.Publishing{MessageId: id.String(), Body: body}))

	testenv.Eventually(t, 20*time.Second, func() error {
		q, err := ch.QueueDeclarePassive(spec.DeadQueue(), true, false, false, false, amqp.Table{"x-queue-type": "quorum"})
		if err != nil {
			return err
		}
		if q.Messages != 1 {
			return errors.New("not dead-lettered yet")
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, spec.DeliveryLimit+1, deliveries, "the first delivery and DeliveryLimit more")
	assert.Equal(t, []uuid.UUID{id}, told)
}
