package reactors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/google/uuid"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/broker"
	"github.com/chatbotsaas/chatbotd/internal/db"
	"github.com/chatbotsaas/chatbotd/internal/faults"
	"github.com/chatbotsaas/chatbotd/internal/metrics"
	"github.com/chatbotsaas/chatbotd/internal/retry"
)

// queueSubscriber is a watermill Subscriber over one of our durable queues. Unlike
// watermill-amqp's, it does not wait for a message's ack before handing out the next
// delivery (up to the prefetch), so the router's handlers work concurrently, and it
// uses the race-free broker.Conn.
type queueSubscriber struct {
	conn     *broker.Conn
	prefetch int
}

// Subscribe consumes the queue named topic. The returned channel closes when ctx ends or
// the connection is lost; unacknowledged deliveries then come back.
func (s queueSubscriber) Subscribe(ctx context.Context, queue string) (<-chan *message.Message, error) {
	ch, err := s.conn.Channel(ctx)
	if err != nil {
		return nil, err
	}
	if err := ch.Qos(s.prefetch, 0, false); err != nil {
		ch.Close()
		return nil, err
	}
	deliveries, err := ch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		ch.Close()
		return nil, err
	}
	out := make(chan *message.Message)
	go func() {
		var settling sync.WaitGroup
		defer func() {
			settling.Wait()
			ch.Close()
			close(out)
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case d, ok := <-deliveries:
				if !ok {
					return
				}
				faults.Duplicate(ch, queue, d)
				msg := message.NewMessage(d.MessageId, d.Body)
				msg.SetContext(ctx)
				// A quorum queue counts a message's failed deliveries in this header
				// (absent on the first): the handler's last try is known.
				if n, ok := d.Headers["x-delivery-count"].(int64); ok {
					msg.Metadata.Set(deliveryCountKey, strconv.FormatInt(n, 10))
				}
				select {
				case out <- msg:
				case <-ctx.Done():
					return // not acked: redelivered
				}
				settling.Add(1)
				go func() {
					defer settling.Done()
					select {
					case <-msg.Acked():
						_ = d.Ack(false)
					case <-msg.Nacked():
						_ = d.Nack(false, true) // the queue's delivery limit dead-letters a message that keeps failing
					case <-ctx.Done():
					}
				}()
			}
		}
	}()
	return out, nil
}

func (queueSubscriber) Close() error { return nil }

// Consumer runs a per-message handler on a durable queue with watermill's router: for
// consumers with side effects outside the database (HTTP calls), which must not run
// inside a projector's batch transaction. Up to Workers messages are handled at once. A
// handler error nacks the message; RabbitMQ redelivers it up to the queue's delivery
// limit, then dead-letters it. An unavailable database is no such error: the message is
// held and tried again (holdWhileUnavailable).
type Consumer struct {
	// Name is the consumer's name in the registry, its label in metrics (the queue's
	// name, prefix included, when empty).
	Name    string
	Conn    *broker.Conn
	Queue   broker.QueueSpec
	Workers int
	Handle  func(*message.Message) error
	// DeadLettered, when set, is told of a message whose last delivery failed (the
	// queue's delivery limit then dead-letters it), as the projector runtime tells a
	// DeadLetterer: so that, for one, a message nobody could answer is marked failed
	// rather than left queued.
	DeadLettered func(ctx context.Context, e events.Envelope, cause error)
	// Store is the event store whose events are handled, as for the projector runtime
	// (projections.Config.Store): another store's are acknowledged and skipped.
	Store   uuid.UUID
	Logger  *slog.Logger
	Metrics *metrics.Metrics
}

// deliveryCountKey is the metadata key of a message's failed deliveries so far.
const deliveryCountKey = "x-delivery-count"

// lastTry tells DeadLettered of a failure on a message's last delivery: one that the
// queue's delivery limit dead-letters when it is nacked.
func (c Consumer) lastTry(h message.HandlerFunc) message.HandlerFunc {
	return func(m *message.Message) ([]*message.Message, error) {
		out, err := h(m)
		if err == nil || c.DeadLettered == nil || db.IsUnavailable(err) {
			return out, err
		}
		n, _ := strconv.Atoi(m.Metadata.Get(deliveryCountKey))
		if n >= c.Queue.DeliveryLimit {
			if e, derr := events.DecodeEnvelope(m.Payload); derr == nil {
				c.DeadLettered(m.Context(), e, err)
			}
		}
		return out, err
	}
}

// Run consumes until ctx ends, reconnecting after failures.
func (c Consumer) Run(ctx context.Context) error {
	pause := retry.Backoff{First: 200 * time.Millisecond}
	for {
		err := c.run(ctx)
		if ctx.Err() != nil {
			return nil
		}
		d := pause.Next()
		c.Logger.Warn("consumer interrupted, retrying", "queue", c.Queue.Name, "error", err, "in", d)
		if !retry.Sleep(ctx.Done(), d) {
			return nil
		}
	}
}

func (c Consumer) label() string {
	if c.Name != "" {
		return c.Name
	}
	return c.Queue.Name
}

// ofStore acknowledges, without handling, a message of another store: its own
// deployment's queue holds its copy.
func (c Consumer) ofStore(h message.HandlerFunc) message.HandlerFunc {
	if c.Store == uuid.Nil {
		return h
	}
	return func(m *message.Message) ([]*message.Message, error) {
		var peek struct {
			StoreID *uuid.UUID `json:"store_id"`
		}
		if json.Unmarshal(m.Payload, &peek) == nil && !(events.Envelope{StoreID: peek.StoreID}).OfStore(c.Store) {
			c.Logger.Debug("event of another store skipped", "queue", c.Queue.Name, "store_id", peek.StoreID)
			c.Metrics.Foreign(c.label())
			return nil, nil
		}
		return h(m)
	}
}

// holdWhileUnavailable tries a message again, with a growing pause, while its handler
// fails because the database is unavailable, until the consumer stops: nacking it would
// count each outage against the queue's delivery limit, and a long one would dead-letter
// messages that did nothing wrong.
func (c Consumer) holdWhileUnavailable(h message.HandlerFunc) message.HandlerFunc {
	return func(m *message.Message) ([]*message.Message, error) {
		return retry.Hold(m.Context().Done(), db.IsUnavailable,
			func(err error, d time.Duration) {
				c.Logger.Warn("database unavailable: holding the message", "queue", c.Queue.Name, "error", err, "retry_in", d)
			},
			func() ([]*message.Message, error) { return h(m) })
	}
}

// observe counts each message's outcome and traces it at debug level with the event's
// correlation id.
func (c Consumer) observe(h message.HandlerFunc) message.HandlerFunc {
	name := c.label()
	return func(m *message.Message) ([]*message.Message, error) {
		start := time.Now()
		out, err := h(m)
		if err != nil {
			c.Metrics.Retried(name)
		} else {
			c.Metrics.Applied(name, 1, time.Since(start))
		}
		if ctx := m.Context(); c.Logger.Enabled(ctx, slog.LevelDebug) {
			if e, derr := events.DecodeEnvelope(m.Payload); derr == nil {
				c.Logger.LogAttrs(ctx, slog.LevelDebug, "event handled", slog.String("event_id", e.ID.String()),
					slog.String("type", e.Type), slog.Bool("ok", err == nil),
					slog.String("correlation_id", e.CorrelationID), slog.String("causation_id", e.CausationID))
			}
		}
		return out, err
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
	logger := watermill.NewSlogLogger(c.Logger.With("queue", c.Queue.Name))
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 30 * time.Second}, logger)
	if err != nil {
		return err
	}
	router.AddMiddleware(middleware.Recoverer, c.ofStore, c.observe, c.lastTry, c.holdWhileUnavailable)
	router.AddConsumerHandler(c.Queue.Name, c.Queue.Name, queueSubscriber{conn: c.Conn, prefetch: max(c.Workers, 1)}, c.Handle)
	if err := router.Run(ctx); err != nil {
		return err
	}
	if ctx.Err() == nil {
		return fmt.Errorf("the subscription of %s ended", c.Queue.Name)
	}
	return nil
}
