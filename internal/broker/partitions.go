package broker

import (
	"errors"
	"fmt"
	"strconv"

	amqp "github.com/rabbitmq/amqp091-go"
)

// FenceHeader marks a fence: a message the partitioned layout's switch puts at the end of
// each queue of the old layout, after that queue stopped receiving events. A consumer that
// reaches it has applied everything the queue held. Its value is "<partitions>/<k>".
const FenceHeader = "chatbotd-fence"

// Layout is how a consumer's events are split over queues: Partitions queues, each fed
// the organizations whose bucket (the header partitionHeader, 0..buckets-1) is k modulo
// Partitions. One partition is the consumer's queue, Base, bound on the event exchange
// (on its frames exchange, for Base.Frames). More are queues named "<base>.p<k>of<n>",
// bound to a headers exchange, "<base>.split", which the event exchange feeds with Base's
// bindings (the frames exchange feeds it every frame, for Base.Frames: a frame holds one
// bucket's events and carries its header); they share Base's dead-letter queue.
type Layout struct {
	Base       QueueSpec
	Partitions int
	// Header and Buckets say how the relay marks a message's bucket (events.PartitionHeader
	// and events.PartitionBuckets).
	Header  string
	Buckets int
}

// SplitExchange is the headers exchange that spreads Base's events over the partitions.
func (l Layout) SplitExchange() string { return l.Base.Name + ".split" }

// Queue is partition k's queue. Each has a single active consumer: a partition is one
// ordered share of the consumer's events.
func (l Layout) Queue(k int) QueueSpec {
	if l.Partitions <= 1 {
		return l.Base
	}
	q := l.Base
	q.Name = fmt.Sprintf("%s.p%dof%d", l.Base.Name, k, l.Partitions)
	q.Exchange, q.Bindings = l.SplitExchange(), nil
	q.DeadLetterTo, q.DeadLetterVia = l.Base.deadLetterKey(), l.Base.Exchange
	q.SingleActiveConsumer = true
	q.Frames = false // bound by its buckets; the split exchange takes Base's frames
	return q
}

// Queues are every partition's queue.
func (l Layout) Queues() []QueueSpec {
	out := make([]QueueSpec, max(l.Partitions, 1))
	for k := range out {
		out[k] = l.Queue(k)
	}
	return out
}

// buckets are the buckets partition k receives.
func (l Layout) buckets(k int) []int {
	var out []int
	for b := k; b < l.Buckets; b += l.Partitions {
		out = append(out, b)
	}
	return out
}

func (l Layout) bucketArgs(b int) amqp.Table {
	return amqp.Table{"x-match": "all", l.Header: strconv.Itoa(b)}
}

// Declare declares the layout's queues and their bindings (idempotent). It leaves other
// layouts' bindings as they are: a switch calls Declare on the new layout, then Detach on
// the old, so that every event is routed to one of them (both, for a moment) at any time.
func (l Layout) Declare(ch *amqp.Channel) error {
	if l.Partitions <= 1 {
		return DeclareQueue(ch, l.Base)
	}
	if l.Partitions > l.Buckets {
		return fmt.Errorf("%s: %d partitions, but organizations are hashed into %d buckets", l.Base.Name, l.Partitions, l.Buckets)
	}
	split := l.SplitExchange()
	if err := ch.ExchangeDeclare(split, amqp.ExchangeHeaders, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %s: %w", split, err)
	}
	for k := range l.Partitions {
		q := l.Queue(k)
		if err := DeclareQueue(ch, q); err != nil {
			return err
		}
		for _, b := range l.buckets(k) {
			if err := ch.QueueBind(q.Name, "", split, false, l.bucketArgs(b)); err != nil {
				return fmt.Errorf("bind queue %s to bucket %d: %w", q.Name, b, err)
			}
		}
	}
	if l.Base.Frames {
		frames := FramesExchange(l.Base.Exchange)
		if err := ch.ExchangeBind(split, "", frames, false, nil); err != nil {
			return fmt.Errorf("bind exchange %s to %s: %w", split, frames, err)
		}
		// An earlier version fed the split exchange single events by Base's patterns.
		for _, b := range l.Base.Bindings {
			if err := ch.ExchangeUnbind(split, b, l.Base.Exchange, false, nil); err != nil {
				return fmt.Errorf("unbind exchange %s from %s: %w", split, b, err)
			}
		}
		return nil
	}
	for _, b := range l.Base.Bindings {
		if err := ch.ExchangeBind(split, b, l.Base.Exchange, false, nil); err != nil {
			return fmt.Errorf("bind exchange %s to %s: %w", split, b, err)
		}
	}
	return nil
}

// Detach stops the layout's queues from receiving events; what they hold stays. For one
// partition it unbinds Base from the event exchange; for more it unbinds each queue from
// its buckets (the split exchange stays, for the layout that replaces it). Bindings that
// are not there are no error.
func (l Layout) Detach(ch *amqp.Channel) error {
	if l.Partitions <= 1 {
		if l.Base.Frames {
			frames := FramesExchange(l.Base.Exchange)
			if err := ch.QueueUnbind(l.Base.Name, "", frames, nil); err != nil {
				return fmt.Errorf("unbind queue %s from %s: %w", l.Base.Name, frames, err)
			}
		}
		return unbindEvents(ch, l.Base)
	}
	for k := range l.Partitions {
		for _, b := range l.buckets(k) {
			if err := ch.QueueUnbind(l.Queue(k).Name, "", l.SplitExchange(), l.bucketArgs(b)); err != nil {
				return fmt.Errorf("unbind queue %s from bucket %d: %w", l.Queue(k).Name, b, err)
			}
		}
	}
	return nil
}

// Fence publishes a fence to the end of each of the layout's queues, and waits for the
// broker's confirms: see FenceHeader. Call it after Detach. It puts ch in confirm mode.
func (l Layout) Fence(ch *amqp.Channel) error {
	if err := ch.Confirm(false); err != nil {
		return err
	}
	n := max(l.Partitions, 1)
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, n))
	for k := range n {
		q := l.Queue(k).Name
		if err := ch.Publish("", q, true, false, amqp.Publishing{DeliveryMode: amqp.Persistent,
			Headers: amqp.Table{FenceHeader: FenceValue(l.Partitions, k)}}); err != nil {
			return fmt.Errorf("fence %s: %w", q, err)
		}
	}
	for range n {
		if c, ok := <-confirms; !ok || !c.Ack {
			return fmt.Errorf("fence %s: not confirmed", l.Base.Name)
		}
	}
	return nil
}

// FenceValue is the FenceHeader of partition k of a layout of n partitions.
func FenceValue(n, k int) string { return fmt.Sprintf("%d/%d", n, k) }

// Remove deletes partition k's queue once it is drained: it refuses (an error: try again
// later) while the queue has consumers or messages. The check is a passive declaration:
// quorum queues refuse queue.delete's if-unused flag with a connection error.
func (l Layout) Remove(ch *amqp.Channel, k int) error {
	name := l.Queue(k).Name
	q, err := ch.QueueDeclarePassive(name, true, false, false, false, nil)
	if err != nil {
		var amqpErr *amqp.Error
		if errors.As(err, &amqpErr) && amqpErr.Code == amqp.NotFound {
			return nil
		}
		return fmt.Errorf("inspect queue %s: %w", name, err)
	}
	if q.Consumers > 0 || q.Messages > 0 {
		return fmt.Errorf("queue %s still has %d consumers and %d messages", name, q.Consumers, q.Messages)
	}
	if _, err := ch.QueueDelete(name, false, false, false); err != nil {
		return fmt.Errorf("delete queue %s: %w", name, err)
	}
	return nil
}
