// Package broker owns the RabbitMQ connection and the topology every role relies on.
//
// The connection is watermill-amqp's ConnectionWrapper, which reconnects with backoff.
// The relay and the projector runtime then drive amqp091 channels themselves: watermill's
// publisher waits for one confirm per message and ignores basic.return, and its
// subscriber waits for each ack before the next delivery, so neither can batch; our
// publisher keeps a window of confirms and treats a returned message as not sent, and our
// consumers ack a committed batch at once.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	amqp "github.com/rabbitmq/amqp091-go"
)

// ErrUnavailable is returned while the broker cannot be reached.
var ErrUnavailable = errors.New("the message broker is unavailable")

// Conn is a self-healing connection. It can be created while RabbitMQ is down: it keeps
// trying in the background, and Channel waits for it.
type Conn struct {
	url    string
	logger *slog.Logger

	mu      sync.Mutex
	wrapper *wamqp.ConnectionWrapper
	ready   chan struct{}
	closed  chan struct{}
	once    sync.Once
}

// Dial starts connecting to url and returns at once.
func Dial(url string, logger *slog.Logger) *Conn {
	c := &Conn{url: url, logger: logger, ready: make(chan struct{}), closed: make(chan struct{})}
	go c.connectLoop()
	return c
}

func (c *Conn) connectLoop() {
	backoff := 200 * time.Millisecond
	for {
		w, err := wamqp.NewConnection(wamqp.ConnectionConfig{
			AmqpURI: c.url,
			Reconnect: &wamqp.ReconnectConfig{
				BackoffInitialInterval:     200 * time.Millisecond,
				BackoffRandomizationFactor: 0.5,
				BackoffMultiplier:          1.5,
				BackoffMaxInterval:         5 * time.Second,
			},
		}, watermill.NewSlogLogger(c.logger.With("component", "amqp")))
		if err == nil {
			c.mu.Lock()
			c.wrapper = w
			c.mu.Unlock()
			close(c.ready)
			return
		}
		c.logger.Warn("rabbitmq not reachable, retrying", "error", err, "in", backoff)
		select {
		case <-c.closed:
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// Connected reports whether the connection is up now (for /health).
func (c *Conn) Connected() bool {
	c.mu.Lock()
	w := c.wrapper
	c.mu.Unlock()
	return w != nil && w.IsConnected() && !w.Connection().IsClosed()
}

// Channel opens a new channel, waiting (bounded by ctx) for the connection.
func (c *Conn) Channel(ctx context.Context) (*amqp.Channel, error) {
	select {
	case <-c.ready:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
	case <-c.closed:
		return nil, ErrUnavailable
	}
	c.mu.Lock()
	w := c.wrapper
	c.mu.Unlock()
	for {
		select {
		case <-w.Connected():
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
		}
		ch, err := w.Connection().Channel()
		if err == nil {
			return ch, nil
		}
		if !errors.Is(err, amqp.ErrClosed) {
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		select { // the wrapper has not noticed the close yet
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
		}
	}
}

// Wrapper waits (bounded by ctx) for the watermill connection, for watermill
// subscribers.
func (c *Conn) Wrapper(ctx context.Context) (*wamqp.ConnectionWrapper, error) {
	select {
	case <-c.ready:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
	case <-c.closed:
		return nil, ErrUnavailable
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wrapper, nil
}

// Close ends the connection.
func (c *Conn) Close() error {
	c.once.Do(func() { close(c.closed) })
	c.mu.Lock()
	w := c.wrapper
	c.mu.Unlock()
	if w != nil {
		return w.Close()
	}
	return nil
}

// UnroutedSuffix names the alternate exchange and queue that keep events no consumer's
// queue was bound for: they are kept, never dropped.
const UnroutedSuffix = ".unrouted"

// DeclareEventExchange declares the durable topic exchange with its alternate exchange.
func DeclareEventExchange(ch *amqp.Channel, exchange string) error {
	ae := exchange + UnroutedSuffix
	if err := ch.ExchangeDeclare(ae, amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %s: %w", ae, err)
	}
	if _, err := ch.QueueDeclare(ae, true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		return fmt.Errorf("declare queue %s: %w", ae, err)
	}
	if err := ch.QueueBind(ae, "", ae, false, nil); err != nil {
		return fmt.Errorf("bind queue %s: %w", ae, err)
	}
	if err := ch.ExchangeDeclare(exchange, amqp.ExchangeTopic, true, false, false, false,
		amqp.Table{"alternate-exchange": ae}); err != nil {
		return fmt.Errorf("declare exchange %s: %w", exchange, err)
	}
	return nil
}

// QueueSpec is a consumer's durable queue.
type QueueSpec struct {
	Name          string
	Exchange      string
	Bindings      []string // routing patterns on Exchange
	DeliveryLimit int      // redeliveries before the broker dead-letters a message
}

// DeadLetterExchange is where a queue's rejected and over-delivered messages go.
func (q QueueSpec) DeadLetterExchange() string { return q.Exchange + ".dlx" }

// DeadQueue holds the dead-lettered messages of queue q.
func (q QueueSpec) DeadQueue() string { return q.Name + ".dead" }

// DeclareQueue declares a quorum queue with a delivery limit and a dead-letter exchange,
// its dead-letter queue, and its bindings.
func DeclareQueue(ch *amqp.Channel, q QueueSpec) error {
	dlx := q.DeadLetterExchange()
	if err := ch.ExchangeDeclare(dlx, amqp.ExchangeDirect, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %s: %w", dlx, err)
	}
	if _, err := ch.QueueDeclare(q.DeadQueue(), true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		return fmt.Errorf("declare queue %s: %w", q.DeadQueue(), err)
	}
	if err := ch.QueueBind(q.DeadQueue(), q.Name, dlx, false, nil); err != nil {
		return fmt.Errorf("bind queue %s: %w", q.DeadQueue(), err)
	}
	if _, err := ch.QueueDeclare(q.Name, true, false, false, false, amqp.Table{
		"x-queue-type":              "quorum",
		"x-delivery-limit":          q.DeliveryLimit,
		"x-dead-letter-exchange":    dlx,
		"x-dead-letter-routing-key": q.Name,
	}); err != nil {
		return fmt.Errorf("declare queue %s: %w", q.Name, err)
	}
	for _, b := range q.Bindings {
		if err := ch.QueueBind(q.Name, b, q.Exchange, false, nil); err != nil {
			return fmt.Errorf("bind queue %s to %s: %w", q.Name, b, err)
		}
	}
	return nil
}
