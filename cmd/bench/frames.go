package main

import (
	"bytes"
	"fmt"
	"io"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
)

// framesFigures measures what RabbitMQ spends per event on the path of a queue's events
// (a persistent publish into one quorum queue, its confirm, its delivery and its
// acknowledgement), with one event a message, as the reactors' queues take them, and with
// each relay batch's events in one message, as the projectors' frames carry them.
// Events are sent at a fixed rate in relay batches of a given size, each batch published
// and confirmed before the next (the relay keeps up to two batches' worth in flight, so
// under load it pays fewer confirm rounds); RabbitMQ's CPU is read from /proc.
func framesFigures(o options, w io.Writer) error {
	conn, err := amqp.Dial(o.amqpURL)
	if err != nil {
		return err
	}
	defer conn.Close()
	fmt.Fprintf(w, "| relay batch (events) | events a message | events/s | RabbitMQ µs an event | µs a message |\n|---:|---:|---:|---:|---:|\n")
	const rate, size = 3000, 700
	for _, batch := range []int{8, 40} {
		for _, per := range []int{1, batch} {
			perEvent, perMessage, err := frameRun(conn, batch, per, size, rate, o.duration)
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "| %d | %d | %d | %.1f | %.1f |\n", batch, per, rate, perEvent, perMessage)
		}
	}
	return nil
}

// frameRun publishes for d at rate events/s, in relay batches of batch events, per events
// a message, into a quorum queue of its own that a consumer drains (acknowledging every
// 20th delivery with multiple, as a projector acknowledges a batch), and returns
// RabbitMQ's CPU per event and per message.
func frameRun(conn *amqp.Connection, batch, per, size, rate int, d time.Duration) (perEvent, perMessage float64, err error) {
	ch, err := conn.Channel()
	if err != nil {
		return 0, 0, err
	}
	defer ch.Close()
	q := "bench.frames." + uuid.NewString()[:8]
	if _, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		return 0, 0, err
	}
	defer func() { _, _ = ch.QueueDelete(q, false, false, false) }()
	if err := ch.Confirm(false); err != nil {
		return 0, 0, err
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, batch))
	consumer, err := conn.Channel()
	if err != nil {
		return 0, 0, err
	}
	defer consumer.Close()
	if err := consumer.Qos(600, 0, false); err != nil {
		return 0, 0, err
	}
	deliveries, err := consumer.Consume(q, "", false, false, false, false, nil)
	if err != nil {
		return 0, 0, err
	}
	go func() {
		n := 0
		for m := range deliveries {
			if n++; n%20 == 0 {
				_ = m.Ack(true)
			}
		}
	}()
	body := bytes.Repeat([]byte("x"), size*per)
	messages := max(batch/per, 1)
	interval := time.Duration(float64(time.Second) * float64(batch) / float64(rate))
	before := cpuByName()["rabbitmq"]
	sent := 0
	start := time.Now()
	for i := 0; time.Since(start) < d; i++ {
		time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
		for range messages {
			if err := ch.Publish("", q, true, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: body,
				ContentType: "application/json", MessageId: uuid.NewString()}); err != nil {
				return 0, 0, err
			}
			sent++
		}
		for range messages {
			if c := <-confirms; !c.Ack {
				return 0, 0, fmt.Errorf("message %d nacked", c.DeliveryTag)
			}
		}
	}
	// Every message delivered, then the queue deleted (the deferred delete) with the
	// deliveries that were not acknowledged yet.
	for deadline := time.Now().Add(30 * time.Second); ; {
		q, err := ch.QueueDeclarePassive(q, true, false, false, false, amqp.Table{"x-queue-type": "quorum"})
		if err != nil {
			return 0, 0, err
		}
		if q.Messages == 0 {
			break
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("%d messages still ready after 30 s", q.Messages)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cpu := (cpuByName()["rabbitmq"] - before) * 1e6 / 100 // µs: USER_HZ is 100 on Linux
	return cpu / float64(sent*per), cpu / float64(sent), nil
}
