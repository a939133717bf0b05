package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/chatbotsaas/chatbotd/internal/broker"
)

// envelopeMarshaler reads our messages: the event id is the AMQP message id and the body
// is the envelope. (watermill-amqp's DefaultMarshaler expects its own uuid header and
// panics on a message with no headers at all.)
type envelopeMarshaler struct{}

func (envelopeMarshaler) Marshal(msg *message.Message) (amqp.Publishing, error) {
	return amqp.Publishing{MessageId: msg.UUID, ContentType: "application/json", DeliveryMode: amqp.Persistent, Body: msg.Payload}, nil
}

func (envelopeMarshaler) Unmarshal(d amqp.Delivery) (*message.Message, error) {
	msg := message.NewMessage(d.MessageId, d.Body)
	for k, v := range d.Headers {
		if s, ok := v.(string); ok {
			msg.Metadata.Set(k, s)
		}
	}
	return msg, nil
}

// declaredTopology is a watermill TopologyBuilder that declares nothing: the queue (a
// quorum queue with a delivery limit and a dead-letter exchange) is declared by
// broker.DeclareQueue before subscribing, with arguments watermill's builder would not set.
type declaredTopology struct{}

func (declaredTopology) BuildTopology(*amqp.Channel, wamqp.BuildTopologyParams, wamqp.Config, watermill.LoggerAdapter) error {
	return nil
}

func (declaredTopology) ExchangeDeclare(*amqp.Channel, string, wamqp.Config) error { return nil }

// Consumer runs a per-message handler on a durable queue with watermill's router: for
// consumers with side effects outside the database (HTTP calls), which must not run
// inside a projector's batch transaction. Several handlers share the queue, so that one
// slow call does not hold up the others. A handler error nacks the message; RabbitMQ
// redelivers it up to the queue's delivery limit, then dead-letters it.
type Consumer struct {
	Conn    *broker.Conn
	Queue   broker.QueueSpec
	Workers int
	Handle  func(*message.Message) error
	Logger  *slog.Logger
}

// Run consumes until ctx ends, reconnecting after failures.
func (c Consumer) Run(ctx context.Context) error {
	backoff := 200 * time.Millisecond
	for {
		err := c.run(ctx)
		if ctx.Err() != nil {
			return nil
		}
		c.Logger.Warn("consumer interrupted, retrying", "queue", c.Queue.Name, "error", err, "in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (c Consumer) run(ctx context.Context) error {
	ch, err := c.Conn.Channel(ctx)
	if err != nil {
		return err
	}
	err = errors.Join(broker.DeclareEventExchange(ch, c.Queue.Exchange), broker.DeclareQueue(ch, c.Queue))
	ch.Close()
	if err != nil {
		return err
	}
	wrapper, err := c.Conn.Wrapper(ctx)
	if err != nil {
		return err
	}
	logger := watermill.NewSlogLogger(c.Logger.With("queue", c.Queue.Name))
	queue, exchange := c.Queue.Name, c.Queue.Exchange
	sub, err := wamqp.NewSubscriberWithConnection(wamqp.Config{
		Marshaler: envelopeMarshaler{},
		Exchange:  wamqp.ExchangeConfig{GenerateName: func(string) string { return exchange }, Type: "topic", Durable: true},
		Queue:     wamqp.QueueConfig{GenerateName: func(string) string { return queue }, Durable: true},
		// Unused (declaredTopology binds nothing) but called unchecked by Subscribe.
		QueueBind:       wamqp.QueueBindConfig{GenerateRoutingKey: func(topic string) string { return topic }},
		Consume:         wamqp.ConsumeConfig{Qos: wamqp.QosConfig{PrefetchCount: 1}},
		TopologyBuilder: declaredTopology{},
	}, logger, wrapper)
	if err != nil {
		return err
	}
	defer sub.Close()
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 30 * time.Second}, logger)
	if err != nil {
		return err
	}
	router.AddMiddleware(middleware.Recoverer)
	for i := 0; i < max(c.Workers, 1); i++ {
		router.AddConsumerHandler(fmt.Sprintf("%s-%d", queue, i), queue, sub, c.Handle)
	}
	return router.Run(ctx)
}
