//go:build chaos

package faults

import (
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Enabled reports whether this is the chaos build.
const Enabled = true

var (
	current = sync.OnceValue(func() settings { return parse(os.Getenv) })
	reached atomic.Int64
)

// Crash kills the process with SIGKILL (no deferred function, no shutdown) the n-th time
// it is called with the point CHAOS_CRASH_AT names.
func Crash(point string) {
	s := current()
	if s.crashPoint != point || reached.Add(1) != s.crashAfter {
		return
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is on its way
}

// Duplicate publishes d again to queue through the default exchange (once: the copy is
// marked), when CHAOS_DUPLICATE_DELIVERY=1. The copy is a real second delivery: it comes
// later, maybe in another batch or to another consumer.
func Duplicate(ch *amqp.Channel, queue string, d amqp.Delivery) {
	if !current().duplicate || d.Headers[copyHeader] != nil {
		return
	}
	headers := amqp.Table{copyHeader: true}
	for k, v := range d.Headers {
		if k != "x-delivery-count" && k != "x-death" {
			headers[k] = v
		}
	}
	_ = ch.Publish("", queue, false, false, amqp.Publishing{Headers: headers, ContentType: d.ContentType,
		DeliveryMode: amqp.Persistent, MessageId: d.MessageId, Type: d.Type, Timestamp: d.Timestamp,
		AppId: d.AppId, CorrelationId: d.CorrelationId, Body: d.Body})
}

// Poisoned reports whether projection must fail an event with data (CHAOS_POISON).
func Poisoned(projection string, data []byte) bool { return current().poisoned(projection, data) }
