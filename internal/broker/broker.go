// Package broker owns the RabbitMQ connection and the topology every role relies on.
//
// The connection is a small reconnecting wrapper over amqp091-go. watermill-amqp's
// ConnectionWrapper would do the reconnecting, but it replaces its "connected" channel
// without a lock while IsConnected reads it (its own subscriber calls it on every
// reconnect), which the race detector reports whenever a connection closes. The relay
// and the projector runtime drive amqp091 channels themselves: watermill's publisher
// waits for one confirm per message and ignores basic.return, and its subscriber waits for
// each ack before the next delivery, so neither could batch. Per-message consumers still
// run on watermill's router (reactors.Consumer).
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/chatbotsaas/chatbotd/internal/retry"
)

// ErrUnavailable is returned while the broker cannot be reached.
var ErrUnavailable = errors.New("the message broker is unavailable")

// Conn is a self-healing connection to one RabbitMQ node or to a cluster reached
// through a list of nodes. It can be created while RabbitMQ is down: Channel connects
// (again) when needed, waiting with backoff within the caller's deadline.
//
// With several nodes it keeps to the one it reached until that connection is lost; it
// then tries the others in turn, beginning with the node after the lost one, so that the
// relay and every consumer of the process carry on through a live node. The order is
// shuffled once per process, so processes spread over the nodes.
type Conn struct {
	urls   []string
	logger *slog.Logger

	mu     sync.Mutex // held while dialling, so one dial serves every waiter
	conn   *amqp.Connection
	node   int // the index in urls of conn's node, or of the next node to try
	closed chan struct{}
	once   sync.Once

	corkMu sync.Mutex // not mu, which a dial holds for seconds
	sock   net.Conn   // the socket of the last connection dialled, for Cork
	corks  int        // Cork calls not yet ended on sock
}

// SplitURLs parses AMQP_URL: one amqp:// (or amqps://) URL per node, separated by
// commas, each with its own credentials and virtual host.
func SplitURLs(list string) []string {
	var out []string
	for _, u := range strings.Split(list, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	return out
}

// Dial returns a connection to the nodes of urls (a comma-separated list, see
// SplitURLs) that connects on first use.
func Dial(urls string, logger *slog.Logger) *Conn {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	list := SplitURLs(urls)
	rand.Shuffle(len(list), func(i, j int) { list[i], list[j] = list[j], list[i] })
	return &Conn{urls: list, logger: logger, closed: make(chan struct{})}
}

// connection returns the live connection, dialling the nodes in turn if there is none.
func (c *Conn) connection() (*amqp.Connection, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.closed:
		return nil, ErrUnavailable
	default:
	}
	if c.conn != nil && !c.conn.IsClosed() {
		return c.conn, nil
	}
	lost := c.conn != nil
	if lost && len(c.urls) > 1 {
		c.node = (c.node + 1) % len(c.urls) // the lost node is tried last
	}
	var errs []error
	for i := range c.urls {
		n := (c.node + i) % len(c.urls)
		conn, err := amqp.DialConfig(c.urls[n], amqp.Config{Heartbeat: 10 * time.Second, Dial: c.dialer(5 * time.Second)})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %v", redact(c.urls[n]), err))
			continue
		}
		if lost {
			c.logger.Info("reconnected to rabbitmq", "node", redact(c.urls[n]))
		}
		c.conn, c.node = conn, n
		return conn, nil
	}
	if len(c.urls) == 0 {
		errs = append(errs, errors.New("no AMQP_URL"))
	}
	return nil, fmt.Errorf("%w: %v", ErrUnavailable, errors.Join(errs...))
}

// Node is the address (host:port) of the node the connection is on, or "" when it is
// not connected.
func (c *Conn) Node() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil || c.conn.IsClosed() {
		return ""
	}
	return redact(c.urls[c.node])
}

// redact is a node's URL as logs and errors show it: host and port only.
func redact(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.Host != "" {
		return u.Host
	}
	return "(unparsable AMQP_URL entry)"
}

// Connected reports whether the broker answers now (for /health): it connects if needed.
func (c *Conn) Connected() bool {
	_, err := c.connection()
	return err == nil
}

// Channel opens a new channel, (re)connecting as needed until ctx ends.
func (c *Conn) Channel(ctx context.Context) (*amqp.Channel, error) {
	pause := retry.Backoff{Max: 2 * time.Second}
	for {
		conn, err := c.connection()
		if err == nil {
			ch, cerr := conn.Channel()
			if cerr == nil {
				return ch, nil
			}
			err = fmt.Errorf("%w: %v", ErrUnavailable, cerr)
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-c.closed:
			return nil, ErrUnavailable
		case <-time.After(pause.Next()):
		}
	}
}

// Close ends the connection.
func (c *Conn) Close() error {
	c.once.Do(func() { close(c.closed) })
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		return c.conn.Close()
	}
	return nil
}

// UnroutedSuffix names the event exchange's alternate exchange. Earlier versions bound a
// queue of the same name to it, which kept every event no queue was bound for; since the
// projectors receive frames (FrameHeader), that was every event nobody outside the
// process subscribed to, kept forever. The exchange stays, because the event exchange's
// arguments name it and RabbitMQ refuses a declaration with other arguments; nothing is
// bound to it, so a single event that no queue wants is dropped, as a topic exchange
// does. The log keeps every event, and the projectors' frames are published mandatory.
const UnroutedSuffix = ".unrouted"

// FramesSuffix names the exchange of frames (FramesExchange).
const FramesSuffix = ".frames"

// FrameHeader marks a frame: a message that carries several events of one organization's
// bucket (a JSON array of envelopes, events.DecodeFrame), in the order of the log. The
// relay publishes every event twice: alone, to the event exchange, for the reactors' and
// outside consumers' queues (API.md's event stream), and in a frame, to the frames
// exchange, for the projectors' group. The broker then writes, delivers and settles one
// message for a relay batch's events of a bucket where it did one for each event
// (BENCHMARKS.md: "Frames"). The value is the number of events.
const FrameHeader = "chatbotd-frame"

// FramesExchange is the fanout exchange of exchange's frames. The projectors' group's
// queue (QueueSpec.Frames) is bound to it, or, partitioned, the group's split exchange.
func FramesExchange(exchange string) string { return exchange + FramesSuffix }

// DeclareEventExchange declares the durable topic exchange, its alternate exchange with
// nothing bound to it (see UnroutedSuffix), and its frames exchange.
func DeclareEventExchange(ch *amqp.Channel, exchange string) error {
	ae := exchange + UnroutedSuffix
	// Deleted and declared again, which drops an earlier version's binding of the
	// unrouted queue (unbinding a queue that does not exist would close the channel).
	// The queue and what it kept stay for the operator (OPERATIONS.md).
	if err := ch.ExchangeDelete(ae, false, false); err != nil {
		return fmt.Errorf("delete exchange %s: %w", ae, err)
	}
	if err := ch.ExchangeDeclare(ae, amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %s: %w", ae, err)
	}
	if err := ch.ExchangeDeclare(exchange, amqp.ExchangeTopic, true, false, false, false,
		amqp.Table{"alternate-exchange": ae}); err != nil {
		return fmt.Errorf("declare exchange %s: %w", exchange, err)
	}
	frames := FramesExchange(exchange)
	if err := ch.ExchangeDeclare(frames, amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %s: %w", frames, err)
	}
	return nil
}

// QueueSpec is a consumer's durable queue.
type QueueSpec struct {
	Name          string
	Exchange      string
	Bindings      []string // routing patterns on Exchange
	DeliveryLimit int      // redeliveries before the broker dead-letters a message
	// SingleActiveConsumer makes the broker deliver to one consumer at a time; the others
	// stand by and the next takes over when it goes away. A projector whose events depend
	// on each other across streams needs it once two processes consume its queue: two
	// active consumers would apply a chatbot's training before its creation.
	SingleActiveConsumer bool
	// DeadLetterTo names the queue whose dead-letter queue this one shares (a partition's
	// base queue, see Layout); empty for the queue's own.
	DeadLetterTo string
	// DeadLetterVia is the exchange of the dead-letter queue's queue (the event exchange,
	// for a partition whose Exchange is the split exchange); empty for Exchange.
	DeadLetterVia string
	// Frames makes the queue take its events in frames (FrameHeader): it is bound to the
	// frames exchange of Exchange, and Bindings only say which events its consumer
	// applies. Every event comes in a frame, whatever its type.
	Frames bool
}

// deadLetterKey is the routing key (the queue name) that the dead-letter queue is bound by.
func (q QueueSpec) deadLetterKey() string {
	if q.DeadLetterTo != "" {
		return q.DeadLetterTo
	}
	return q.Name
}

// DeadLetterExchange is where a queue's rejected and over-delivered messages go.
func (q QueueSpec) DeadLetterExchange() string {
	if q.DeadLetterVia != "" {
		return q.DeadLetterVia + ".dlx"
	}
	return q.Exchange + ".dlx"
}

// DeadQueue holds the dead-lettered messages of queue q.
func (q QueueSpec) DeadQueue() string { return q.deadLetterKey() + ".dead" }

// DeclareDeadQueue declares q's dead-letter exchange and queue, bound by q's
// dead-letter key.
func DeclareDeadQueue(ch *amqp.Channel, q QueueSpec) error {
	dlx := q.DeadLetterExchange()
	if err := ch.ExchangeDeclare(dlx, amqp.ExchangeDirect, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %s: %w", dlx, err)
	}
	if _, err := ch.QueueDeclare(q.DeadQueue(), true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		return fmt.Errorf("declare queue %s: %w", q.DeadQueue(), err)
	}
	if err := ch.QueueBind(q.DeadQueue(), q.deadLetterKey(), dlx, false, nil); err != nil {
		return fmt.Errorf("bind queue %s: %w", q.DeadQueue(), err)
	}
	return nil
}

// DeclareQueue declares a quorum queue with a delivery limit and a dead-letter exchange,
// its dead-letter queue, and its bindings.
func DeclareQueue(ch *amqp.Channel, q QueueSpec) error {
	if err := DeclareDeadQueue(ch, q); err != nil {
		return err
	}
	dlx := q.DeadLetterExchange()
	args := amqp.Table{
		"x-queue-type":              "quorum",
		"x-delivery-limit":          q.DeliveryLimit,
		"x-dead-letter-exchange":    dlx,
		"x-dead-letter-routing-key": q.deadLetterKey(),
	}
	if q.SingleActiveConsumer {
		args["x-single-active-consumer"] = true
	}
	if _, err := ch.QueueDeclare(q.Name, true, false, false, false, args); err != nil {
		var amqpErr *amqp.Error
		if errors.As(err, &amqpErr) && amqpErr.Code == amqp.PreconditionFailed {
			return fmt.Errorf("declare queue %s: it exists with other arguments (an earlier version, or another "+
				"PROJECTOR_DELIVERY_LIMIT): once it is drained, delete it (rabbitmqctl delete_queue %s) and start again: %w", q.Name, q.Name, err)
		}
		return fmt.Errorf("declare queue %s: %w", q.Name, err)
	}
	if q.Frames {
		frames := FramesExchange(q.Exchange)
		if err := ch.QueueBind(q.Name, "", frames, false, nil); err != nil {
			return fmt.Errorf("bind queue %s to %s: %w", q.Name, frames, err)
		}
		// An earlier version bound the queue by its patterns: its events would come twice
		// (the second skipped as applied). Bound to the frames first, so none is missed.
		return unbindEvents(ch, q)
	}
	for _, b := range q.Bindings {
		if err := ch.QueueBind(q.Name, b, q.Exchange, false, nil); err != nil {
			return fmt.Errorf("bind queue %s to %s: %w", q.Name, b, err)
		}
	}
	return nil
}

// unbindEvents removes q's bindings by its patterns on the event exchange (not there: no
// error).
func unbindEvents(ch *amqp.Channel, q QueueSpec) error {
	for _, b := range q.Bindings {
		if err := ch.QueueUnbind(q.Name, b, q.Exchange, nil); err != nil {
			return fmt.Errorf("unbind queue %s from %s: %w", q.Name, b, err)
		}
	}
	return nil
}
