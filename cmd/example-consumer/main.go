// Command consumer is an outside consumer of the event stream, as an analytics team or
// an integration would write it: it binds its own durable queue to the topic exchange
// chatbot.events with the routing patterns it wants, reads each envelope with the event
// contract's own decoder (package events imports no infrastructure), drops redeliveries
// by event id, and prints one line per event.
//
//	go run ./cmd/example-consumer -queue analytics.conversations -bind 'conversation.#' -bind 'message.#'
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/chatbotsaas/chatbotd/events"
)

type patterns []string

func (p *patterns) String() string     { return strings.Join(*p, ",") }
func (p *patterns) Set(v string) error { *p = append(*p, v); return nil }

// Config is what the consumer needs.
type Config struct {
	URL, Exchange, Queue string
	Bindings             []string
	// Max stops after this many events (0: run until interrupted).
	Max int
}

func main() {
	var cfg Config
	var binds patterns
	flag.StringVar(&cfg.URL, "amqp", "amqp://guest:guest@127.0.0.1:5672/", "RabbitMQ URL")
	flag.StringVar(&cfg.Exchange, "exchange", "chatbot.events", "the event exchange")
	flag.StringVar(&cfg.Queue, "queue", "example.consumer", "your own durable queue")
	flag.Var(&binds, "bind", "a routing pattern to bind (repeatable), e.g. 'conversation.#'; default '#'")
	flag.IntVar(&cfg.Max, "max", 0, "stop after this many events")
	flag.Parse()
	cfg.Bindings = binds
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
}

// Run consumes until ctx ends or Max events were printed.
func Run(ctx context.Context, cfg Config, out io.Writer) error {
	if len(cfg.Bindings) == 0 {
		cfg.Bindings = []string{"#"}
	}
	conn, err := amqp.Dial(cfg.URL)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	// A quorum queue survives a broker restart and keeps messages until they are acked.
	if _, err := ch.QueueDeclare(cfg.Queue, true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		return err
	}
	for _, b := range cfg.Bindings {
		if err := ch.QueueBind(cfg.Queue, b, cfg.Exchange, false, nil); err != nil {
			return err
		}
	}
	if err := ch.Qos(100, 0, false); err != nil {
		return err
	}
	msgs, err := ch.Consume(cfg.Queue, "", false, false, false, false, nil)
	if err != nil {
		return err
	}
	// Delivery is at least once: remember the ids seen. A real consumer keeps them with
	// its own writes (a unique key on the event id), so that a restart remembers too.
	seen := map[uuid.UUID]bool{}
	printed := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-msgs:
			if !ok {
				return errors.New("the broker closed the channel")
			}
			// The envelope type of the event contract: package events imports no
			// infrastructure, so an outside consumer can take it as it is.
			e, err := events.DecodeEnvelope(m.Body)
			if err != nil || e.ID == uuid.Nil {
				_ = m.Nack(false, false) // not an envelope: to the queue's dead letters, if any
				continue
			}
			if !seen[e.ID] {
				seen[e.ID] = true
				fmt.Fprintf(out, "%d %s %s v%d %s\n", e.Position, e.Type, e.StreamID, e.StreamVersion, e.Data)
				printed++
			}
			if err := m.Ack(false); err != nil {
				return err
			}
			if cfg.Max > 0 && printed >= cfg.Max {
				return nil
			}
		}
	}
}
