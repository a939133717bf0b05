package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatbotsaas/chatbotd/internal/db"
)

// The peer pipeline: the same command, POST a chatbot and see it in a read model, built
// the way watermill documents it (its CQRS component and the "transactional events"
// forwarder example), in this process like the bare service, each part in its default
// configuration:
//
//	HTTP (Gin) ─► CommandBus ─► watermill-amqp durable queue ─► CommandProcessor
//	  command handler: one transaction inserts the write model's row and publishes
//	  ChatbotCreated through an EventBus on watermill-sql's publisher (the outbox),
//	  wrapped by the forwarder's publisher
//	forwarder: watermill-sql subscriber on the outbox ─► watermill-amqp publisher
//	  (a durable pub/sub exchange per event) ─► EventProcessor ─► event handler writing
//	  the read model (a table like chatbotd's own).
//
// Its 2xx means "command sent to RabbitMQ" (CommandBus.Send returned), earlier and weaker
// than chatbotd's "event durable in the log"; both counts and times below favour it.

const (
	peerPrefix         = "bench.peer."
	peerForwarderTopic = "bench_peer_outbox" // a table name for watermill-sql
)

// CreateChatbot is the peer's command.
type CreateChatbot struct {
	ID          uuid.UUID `json:"id"`
	Org         uuid.UUID `json:"org"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
}

// ChatbotCreated is the peer's event.
type ChatbotCreated struct {
	ID          uuid.UUID `json:"id"`
	Org         uuid.UUID `json:"org"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
	At          time.Time `json:"at"`
}

// peer is the running peer pipeline.
type peer struct {
	base    string
	pool    *pgxpool.Pool // its own database, as a service of its own would have
	applied *appliedLog
	stop    func()
}

// appliedLog records when the peer's event handler committed each chatbot, for the
// 2xx → read model figure; waiters may come before or after the handler.
type appliedLog struct {
	mu sync.Mutex
	at map[uuid.UUID]*appliedEntry
}

type appliedEntry struct {
	done chan struct{}
	at   time.Time
}

func (l *appliedLog) entry(id uuid.UUID) *appliedEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.at[id]
	if !ok {
		e = &appliedEntry{done: make(chan struct{})}
		l.at[id] = e
	}
	return e
}

func (l *appliedLog) record(id uuid.UUID) {
	e := l.entry(id)
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-e.done: // delivered twice: the first commit counts
	default:
		e.at = time.Now()
		close(e.done)
	}
}

// wait returns when id was applied, or fails after limit.
func (l *appliedLog) wait(id uuid.UUID, limit time.Duration) (time.Time, error) {
	e := l.entry(id)
	select {
	case <-e.done:
		return e.at, nil
	case <-time.After(limit):
		return time.Time{}, fmt.Errorf("peer: chatbot %s not in the read model after %s", id, limit)
	}
}

// startPeer starts the peer on a database of its own (migrated, for the shape of the
// chatbots table): in chatbotd's, its transactions would be chatbotd's relay's to wait
// for.
func startPeer(ctx context.Context, o options) (*peer, error) {
	amqpURL := o.amqpURL
	removeByPrefix(amqpURL, peerPrefix)
	url, err := db.Recreate(ctx, o.server, o.database+"_peer")
	if err != nil {
		return nil, err
	}
	// Few connections: its handlers take one message at a time, and PostgreSQL's 100 are
	// shared with chatbotd and the bench.
	pool, err := db.Open(ctx, url, 8)
	if err != nil {
		return nil, err
	}
	if err := db.Migrate(ctx, pool, slog.New(slog.DiscardHandler)); err != nil {
		pool.Close()
		return nil, err
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE peer_chatbots_write (LIKE chatbots INCLUDING ALL);
		CREATE TABLE peer_chatbots (LIKE chatbots INCLUDING ALL)`); err != nil {
		pool.Close()
		return nil, err
	}
	logger := watermill.NopLogger{}
	ctx, cancel := context.WithCancel(ctx)
	closers := []func() error{func() error { pool.Close(); return nil }}
	stop := func() {
		cancel()
		for i := len(closers) - 1; i >= 0; i-- {
			_ = closers[i]()
		}
	}
	fail := func(err error) (*peer, error) {
		stop()
		return nil, fmt.Errorf("peer pipeline: %w", err)
	}

	// The command bus: a durable queue per command, as watermill's CQRS example has it.
	commandsConfig := wamqp.NewDurableQueueConfig(amqpURL)
	commandPublisher, err := wamqp.NewPublisher(commandsConfig, logger)
	if err != nil {
		return fail(err)
	}
	closers = append(closers, commandPublisher.Close)
	commandTopic := func(name string) string { return peerPrefix + "commands." + name }
	eventTopic := func(name string) string { return peerPrefix + "events." + name }
	commandBus, err := cqrs.NewCommandBusWithConfig(commandPublisher, cqrs.CommandBusConfig{
		GeneratePublishTopic: func(p cqrs.CommandBusGeneratePublishTopicParams) (string, error) {
			return commandTopic(p.CommandName), nil
		},
		Marshaler: cqrs.JSONMarshaler{},
		Logger:    logger,
	})
	if err != nil {
		return fail(err)
	}

	router, err := message.NewRouter(message.RouterConfig{}, logger)
	if err != nil {
		return fail(err)
	}
	router.AddMiddleware(middleware.Recoverer)

	commandProcessor, err := cqrs.NewCommandProcessorWithConfig(router, cqrs.CommandProcessorConfig{
		GenerateSubscribeTopic: func(p cqrs.CommandProcessorGenerateSubscribeTopicParams) (string, error) {
			return commandTopic(p.CommandName), nil
		},
		SubscriberConstructor: func(cqrs.CommandProcessorSubscriberConstructorParams) (message.Subscriber, error) {
			return wamqp.NewSubscriber(commandsConfig, logger)
		},
		Marshaler: cqrs.JSONMarshaler{},
		Logger:    logger,
	})
	if err != nil {
		return fail(err)
	}
	// The command handler: the write model's row and the event in one transaction, the
	// event through an EventBus made on the transaction (watermill-sql's publisher, behind
	// the forwarder's envelope).
	err = commandProcessor.AddHandlers(cqrs.NewCommandHandler("CreateChatbotHandler", func(ctx context.Context, c *CreateChatbot) error {
		tx, err := pool.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx) //nolint:errcheck // after Commit, a no-op
		now := time.Now().UTC()
		if _, err := tx.Exec(ctx, `INSERT INTO peer_chatbots_write (id, organization_id, name, description, welcome_message,
			fallback_message, status, responder, version, created_at, updated_at)
			VALUES ($1, $2, $3, $4, '', 'Sorry, I do not know.', 'draft', '{"type":"knowledge_base"}', 1, $5, $5)`,
			c.ID, c.Org, c.Name, c.Description, now); err != nil {
			return err
		}
		outbox, err := wsql.NewPublisher(wsql.TxFromPgx(tx), wsql.PublisherConfig{SchemaAdapter: wsql.DefaultPostgreSQLSchema{}}, logger)
		if err != nil {
			return err
		}
		eventBus, err := cqrs.NewEventBusWithConfig(forwarder.NewPublisher(outbox, forwarder.PublisherConfig{ForwarderTopic: peerForwarderTopic}),
			cqrs.EventBusConfig{
				GeneratePublishTopic: func(p cqrs.GenerateEventPublishTopicParams) (string, error) { return eventTopic(p.EventName), nil },
				Marshaler:            cqrs.JSONMarshaler{},
				Logger:               logger,
			})
		if err != nil {
			return err
		}
		if err := eventBus.Publish(ctx, &ChatbotCreated{ID: c.ID, Org: c.Org, Name: c.Name, Description: c.Description, At: now}); err != nil {
			return err
		}
		return tx.Commit(ctx)
	}))
	if err != nil {
		return fail(err)
	}

	// Events: a durable pub/sub exchange per event, a queue per handler.
	eventProcessor, err := cqrs.NewEventProcessorWithConfig(router, cqrs.EventProcessorConfig{
		GenerateSubscribeTopic: func(p cqrs.EventProcessorGenerateSubscribeTopicParams) (string, error) {
			return eventTopic(p.EventName), nil
		},
		SubscriberConstructor: func(p cqrs.EventProcessorSubscriberConstructorParams) (message.Subscriber, error) {
			return wamqp.NewSubscriber(wamqp.NewDurablePubSubConfig(amqpURL, wamqp.GenerateQueueNameTopicNameWithSuffix(p.HandlerName)), logger)
		},
		Marshaler: cqrs.JSONMarshaler{},
		Logger:    logger,
	})
	if err != nil {
		return fail(err)
	}
	applied := &appliedLog{at: map[uuid.UUID]*appliedEntry{}}
	err = eventProcessor.AddHandlers(cqrs.NewEventHandler("ChatbotsReadModel", func(ctx context.Context, e *ChatbotCreated) error {
		// At least once: a redelivered event finds its row.
		if _, err := pool.Exec(ctx, `INSERT INTO peer_chatbots (id, organization_id, name, description, welcome_message,
			fallback_message, status, responder, version, created_at, updated_at)
			VALUES ($1, $2, $3, $4, '', 'Sorry, I do not know.', 'draft', '{"type":"knowledge_base"}', 1, $5, $5)
			ON CONFLICT (id) DO NOTHING`, e.ID, e.Org, e.Name, e.Description, e.At); err != nil {
			return err
		}
		applied.record(e.ID)
		return nil
	}))
	if err != nil {
		return fail(err)
	}

	// The forwarder: from the outbox table to RabbitMQ.
	outboxSubscriber, err := wsql.NewSubscriber(wsql.BeginnerFromPgx(pool), wsql.SubscriberConfig{
		SchemaAdapter:    wsql.DefaultPostgreSQLSchema{},
		OffsetsAdapter:   wsql.DefaultPostgreSQLOffsetsAdapter{},
		InitializeSchema: true,
	}, logger)
	if err != nil {
		return fail(err)
	}
	if err := outboxSubscriber.SubscribeInitialize(peerForwarderTopic); err != nil {
		return fail(err)
	}
	eventsPublisher, err := wamqp.NewPublisher(wamqp.NewDurablePubSubConfig(amqpURL, nil), logger)
	if err != nil {
		return fail(err)
	}
	closers = append(closers, eventsPublisher.Close)
	fwd, err := forwarder.NewForwarder(outboxSubscriber, eventsPublisher, logger, forwarder.Config{ForwarderTopic: peerForwarderTopic})
	if err != nil {
		return fail(err)
	}
	closers = append(closers, fwd.Close)
	go func() { _ = fwd.Run(ctx) }()
	go func() { _ = router.Run(ctx) }()
	closers = append(closers, router.Close)
	select {
	case <-router.Running():
	case <-time.After(30 * time.Second):
		return fail(errors.New("the router did not start"))
	}
	select {
	case <-fwd.Running():
	case <-time.After(30 * time.Second):
		return fail(errors.New("the forwarder did not start"))
	}

	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(gin.Recovery())
	org := uuid.New()
	r.POST("/peer/chatbots", func(c *gin.Context) {
		in, ok := bindChatbot(c)
		if !ok {
			return
		}
		id := uuid.Must(uuid.NewV7())
		if err := commandBus.Send(c, &CreateChatbot{ID: id, Org: org, Name: in.Name, Description: in.Description}); err != nil {
			c.JSON(500, gin.H{"error": gin.H{"code": "INTERNAL"}})
			return
		}
		c.JSON(202, gin.H{"data": gin.H{"id": id}})
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	srv := &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	closers = append(closers, srv.Close)
	return &peer{base: "http://" + ln.Addr().String(), pool: pool, applied: applied, stop: func() {
		stop()
		removeByPrefix(amqpURL, peerPrefix)
	}}, nil
}

// pipelineRun is one throughput run of a pipeline: commands answered 2xx, and the rate
// at which they reached the read model.
type pipelineRun struct {
	load    bombardResult
	through float64       // commands in the read model per second, from the first command to the last one's row
	drain   time.Duration // from the load's end until the read model held every command
}

// pipelineThroughput drives url with bombardier for d, then waits until the read model's
// table (in pool's database) holds a row for every command answered 2xx.
func pipelineThroughput(ctx context.Context, bomb bombardier, pool *pgxpool.Pool, table, url, token string, body []byte, d time.Duration) (pipelineRun, error) {
	count := func() (int64, error) {
		var n int64
		err := pool.QueryRow(ctx, `SELECT count(*) FROM `+table).Scan(&n)
		return n, err
	}
	before, err := count()
	if err != nil {
		return pipelineRun{}, err
	}
	start := time.Now()
	r, err := bomb.post(ctx, url, token, body, benchClients, d)
	if err != nil {
		return pipelineRun{}, err
	}
	if r.other > 0 || r.errors > 0 {
		return pipelineRun{}, fmt.Errorf("%s: %d answers not 2xx, %d failed requests", url, r.other, r.errors)
	}
	loaded := time.Now()
	var last int64
	err = waitFor(ctx, 10*time.Minute, func() (bool, error) {
		n, err := count()
		last = n - before
		return last >= int64(r.count), err
	})
	if err != nil {
		return pipelineRun{}, fmt.Errorf("%s: %d of %d commands in %s: %w", url, last, r.count, table, err)
	}
	return pipelineRun{load: r, through: float64(r.count) / time.Since(start).Seconds(), drain: time.Since(loaded)}, nil
}

// peerFigures compares the whole binary with the peer pipeline on the same command:
// throughput into the read model under bombardier's load (alternating rounds), then the
// time from a 2xx to the read model at the same fixed rate for both.
func peerFigures(ctx context.Context, o options, srv *server, pool *pgxpool.Pool, w io.Writer) error {
	p, err := startPeer(ctx, o)
	if err != nil {
		return err
	}
	defer p.stop()
	bomb, body, err := bombardChatbots(ctx)
	if err != nil {
		return err
	}
	var ours, theirs []pipelineRun
	for i := range 2 {
		if err := settle(ctx, pool, "bench.serve."); err != nil {
			return err
		}
		a, err := pipelineThroughput(ctx, bomb, pool, "chatbots", srv.base+"/api/v1/chatbots", srv.token, body, o.duration)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "pipeline round %d, chatbotd: %.0f 2xx/s, %.0f into the read model/s (drained %s after)\n", i+1, a.load.rate, a.through, a.drain.Round(time.Millisecond))
		b, err := pipelineThroughput(ctx, bomb, p.pool, "peer_chatbots", p.base+"/peer/chatbots", "", body, o.duration)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "pipeline round %d, watermill peer: %.0f 2xx/s, %.0f into the read model/s (drained %s after)\n", i+1, b.load.rate, b.through, b.drain.Round(time.Millisecond))
		ours, theirs = append(ours, a), append(theirs, b)
	}
	// Latency at one rate both sustain: half the peer's lower throughput.
	rate := min(theirs[0].through, theirs[1].through) / 2
	if err := settle(ctx, pool, "bench.serve."); err != nil {
		return err
	}
	_, oursRead, err := commandToRead(srv, rate, 2*o.duration)
	if err != nil {
		return err
	}
	peerCmd := func(i int) any { return map[string]string{"name": fmt.Sprintf("Paced bot %d", i)} }
	_, theirRead, err := openLoop(srv.client, jsonRequest("POST", p.base+"/peer/chatbots", "", peerCmd), 202, rate, 2*o.duration,
		func(i int, res *http.Response, body []byte) (time.Duration, bool, error) {
			if i%5 != 0 {
				return 0, false, nil
			}
			t0 := time.Now()
			var env struct {
				Data struct {
					ID uuid.UUID `json:"id"`
				} `json:"data"`
			}
			if err := json.Unmarshal(body, &env); err != nil {
				return 0, false, err
			}
			at, err := p.applied.wait(env.Data.ID, time.Minute)
			if err != nil {
				return 0, false, err
			}
			return max(at.Sub(t0), 0), true, nil
		})
	if err != nil {
		return fmt.Errorf("peer at %.0f/s: %w", rate, err)
	}
	fmt.Fprintf(os.Stderr, "2xx to read model at %.0f/s: chatbotd p50 %s p99 %s; peer p50 %s p99 %s\n", rate,
		ms(oursRead.p50), ms(oursRead.p99), ms(theirRead.p50), ms(theirRead.p99))

	fmt.Fprint(w, "\n### The same command through watermill's documented pipeline (the peer)\n\n")
	fmt.Fprint(w, "The peer is `POST /peer/chatbots` built as watermill documents it, in the bench's process like the bare service, "+
		"every part in its default configuration (`cmd/bench/peer.go`): Gin → `cqrs.CommandBus` on a watermill-amqp durable queue → "+
		"`cqrs.CommandProcessor` → a command handler inserting the write model's row and publishing `ChatbotCreated` in one "+
		"transaction, through an `EventBus` on watermill-sql's publisher behind the forwarder's envelope (the SQL outbox) → "+
		"the forwarder (watermill-sql subscriber → watermill-amqp durable pub/sub publisher) → `cqrs.EventProcessor` → an event "+
		"handler inserting the read model's row (a table like chatbotd's `chatbots`). Its 2xx means the command was sent to "+
		"RabbitMQ, not that anything is durable in PostgreSQL; chatbotd's means the event is in the log.\n\n")
	fmt.Fprintf(w, "Throughput: bombardier, %d connections for %s, rounds alternating; *into the read model* is the commands "+
		"answered 2xx divided by the time from the first command until the read model held the last one.\n\n", benchClients, o.duration)
	fmt.Fprint(w, "| round | chatbotd 2xx/s | into the read model/s | peer 2xx/s | into the read model/s | ratio (read model) |\n|---:|---:|---:|---:|---:|---:|\n")
	for i := range ours {
		a, b := ours[i], theirs[i]
		fmt.Fprintf(w, "| %d | %.0f | %.0f | %.0f | %.0f | %.2f× |\n", i+1, a.load.rate, a.through, b.load.rate, b.through, a.through/b.through)
	}
	fmt.Fprintf(w, "\nFrom the 2xx to the read model at %.0f commands/s (half the peer's lower throughput), for %s on a fixed schedule, "+
		"one command in five sampled: chatbotd's through `GET /api/v1/chatbots/{id}` with the consistency token, until its 200; the "+
		"peer's until its event handler's insert returned (no read at all: in its favour).\n\n", rate, 2*o.duration)
	fmt.Fprint(w, "| pipeline | samples | p50 | p99 | p99 ratio |\n|---|---:|---:|---:|---:|\n")
	n := func(r loadResult) int { return int(r.rate * (2 * o.duration).Seconds()) }
	fmt.Fprintf(w, "| chatbotd | %d | %s | %s | %.2f× |\n", n(oursRead), ms(oursRead.p50), ms(oursRead.p99), float64(oursRead.p99)/float64(theirRead.p99))
	fmt.Fprintf(w, "| watermill peer | %d | %s | %s | 1.00× |\n", n(theirRead), ms(theirRead.p50), ms(theirRead.p99))
	return nil
}
