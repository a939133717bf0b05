package projections_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/broker"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
	"github.com/chatbotsaas/chatbotd/projections"
	"github.com/chatbotsaas/chatbotd/projections/reactors"
)

// consumerRuntime is one way the project consumes a queue, reduced to what the contract
// needs: start it on queue name with a handler and a dead-letter hook; the returned
// function stops it and waits.
type consumerRuntime struct {
	name  string
	start func(t *testing.T, env *contractEnv, name string, handle func(events.Envelope) error,
		dead func(events.Envelope)) (stop func())
}

type contractEnv struct {
	db   testenv.Database
	amqp *testenv.AMQP
	conn *broker.Conn
}

// hook is a projector whose Apply and DeadLettered are the contract's.
type hook struct {
	name   string
	handle func(events.Envelope) error
	dead   func(events.Envelope)
}

func (h hook) Name() string                                               { return h.name }
func (hook) Bindings() []string                                           { return []string{"contract.*"} }
func (h hook) Apply(_ context.Context, _ pgx.Tx, e events.Envelope) error { return h.handle(e) }
func (h hook) DeadLettered(_ context.Context, e events.Envelope, _ error) { h.dead(e) }

const contractDeliveryLimit = 2

// contractStore is the event store the runtimes consume for.
var contractStore = uuid.New()

var runtimes = []consumerRuntime{
	{name: "projector runtime (Runner)", start: func(t *testing.T, env *contractEnv, name string, handle func(events.Envelope) error,
		dead func(events.Envelope)) func() {
		r, err := projections.NewRunner(env.db.Pool, env.conn, hook{name: name, handle: handle, dead: dead}, projections.Config{
			Exchange: env.amqp.Exchange, QueuePrefix: env.amqp.QueuePrefix, DeliveryLimit: contractDeliveryLimit, Attempts: 2,
			Store:  contractStore,
			Logger: testenv.Logger(t)})
		require.NoError(t, err)
		return run(r.Run)
	}},
	{name: "projector group (Runner of a Group)", start: func(t *testing.T, env *contractEnv, name string, handle func(events.Envelope) error,
		dead func(events.Envelope)) func() {
		// The contract's projector shares the group's queue with a member that takes every
		// event; the contract's dead letters are its own (named as the group, its dead-letter
		// queue is the one the contract reads).
		env.amqp.Queue(name + "-bystander")
		bystander := hook{name: name + "-bystander", handle: func(events.Envelope) error { return nil }, dead: func(events.Envelope) {}}
		g := projections.NewGroup(name, hook{name: name, handle: handle, dead: dead}, bystander)
		r, err := projections.NewRunner(env.db.Pool, env.conn, g, projections.Config{
			Exchange: env.amqp.Exchange, QueuePrefix: env.amqp.QueuePrefix, DeliveryLimit: contractDeliveryLimit, Attempts: 2,
			Store:  contractStore,
			Logger: testenv.Logger(t)})
		require.NoError(t, err)
		return run(r.Run)
	}},
	{name: "watermill consumer (Consumer)", start: func(t *testing.T, env *contractEnv, name string, handle func(events.Envelope) error,
		dead func(events.Envelope)) func() {
		c := reactors.Consumer{Conn: env.conn, Workers: 4, Logger: testenv.Logger(t), Store: contractStore,
			Queue: broker.QueueSpec{Name: env.amqp.QueuePrefix + name, Exchange: env.amqp.Exchange, Bindings: []string{"contract.*"},
				DeliveryLimit: contractDeliveryLimit},
			Handle: func(m *message.Message) error {
				e, err := events.DecodeEnvelope(m.Payload)
				if err != nil {
					return err
				}
				return handle(e)
			},
			DeadLettered: func(_ context.Context, e events.Envelope, _ error) { dead(e) }}
		return run(c.Run)
	}},
}

// run starts a runtime's Run and returns what stops it and waits for it.
func run(f func(context.Context) error) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = f(ctx); close(done) }()
	return func() { cancel(); <-done }
}

// The contract every consumer runtime keeps, whatever it runs: each message is handled
// and acknowledged; a poison message goes to the dead letters (its hook told once) while
// the rest flows; a database that is down holds the work instead of dead-lettering it;
// work unfinished at shutdown stays in the queue for the next process; another event
// store's message is acknowledged and never handled.
func TestConsumerRuntimesKeepOneContract(t *testing.T) {
	for _, rt := range runtimes {
		t.Run(rt.name, func(t *testing.T) {
			env := &contractEnv{db: testenv.MustDatabase(t), amqp: testenv.MustAMQP(t)}
			env.conn = broker.Dial(env.amqp.URL, testenv.Logger(t))
			defer env.conn.Close()
			raw, err := amqp.Dial(env.amqp.URL)
			require.NoError(t, err)
			defer raw.Close()
			ch, err := raw.Channel()
			require.NoError(t, err)
			publishFor := func(store uuid.UUID, id uuid.UUID) {
				// As the relay publishes: alone, and in a frame, which a group's queue takes.
				testenv.PublishEvents(t, ch, env.amqp.Exchange, events.Envelope{ID: id, Type: "contract.happened", SchemaVersion: 1,
					StreamType: "contract", StreamID: uuid.New(), StreamVersion: 1, Position: 1,
					OccurredAt: time.Now().UTC(), Data: json.RawMessage(`{}`), StoreID: &store})
			}
			publish := func(id uuid.UUID) { publishFor(contractStore, id) }
			queueLen := func(name string) int {
				q, err := ch.QueueDeclarePassive(name, true, false, false, false, amqp.Table{"x-queue-type": "quorum"})
				require.NoError(t, err)
				return q.Messages
			}
			type seen struct {
				sync.Mutex
				handled map[uuid.UUID]int
				dead    []uuid.UUID
			}
			scenario := func(name string, fail func(id uuid.UUID, call int) error) (*seen, string, func()) {
				s := &seen{handled: map[uuid.UUID]int{}}
				handle := func(e events.Envelope) error {
					s.Lock()
					s.handled[e.ID]++
					call := s.handled[e.ID]
					s.Unlock()
					return fail(e.ID, call)
				}
				dead := func(e events.Envelope) { s.Lock(); s.dead = append(s.dead, e.ID); s.Unlock() }
				queue := env.amqp.Queue(name)
				stop := rt.start(t, env, name, handle, dead)
				env.amqp.WaitConsumer(queue)
				return s, queue, stop
			}
			handledAll := func(s *seen, ids ...uuid.UUID) func() error {
				return func() error {
					s.Lock()
					defer s.Unlock()
					for _, id := range ids {
						if s.handled[id] == 0 {
							return fmt.Errorf("%s not handled", id)
						}
					}
					return nil
				}
			}
			drained := func(queue string) func() error {
				return func() error {
					if n := queueLen(queue); n != 0 {
						return fmt.Errorf("%d messages left in %s", n, queue)
					}
					return nil
				}
			}

			// Handled and acknowledged; another store's event acknowledged, never handled.
			s, queue, stop := scenario("contract-flow", func(uuid.UUID, int) error { return nil })
			ids := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
			foreign := uuid.New()
			publishFor(uuid.New(), foreign)
			for _, id := range ids {
				publish(id)
			}
			testenv.Eventually(t, 15*time.Second, handledAll(s, ids...))
			stop() // acknowledgements are settled before a runtime returns
			assert.Zero(t, queueLen(queue), "every message acknowledged")
			assert.Zero(t, queueLen(queue+".dead"))
			s.Lock()
			assert.Zero(t, s.handled[foreign], "another store's event is not handled")
			s.Unlock()

			// Poison to the dead letters; the rest flows.
			poison := uuid.New()
			s, queue, stop = scenario("contract-poison", func(id uuid.UUID, _ int) error {
				if id == poison {
					return errors.New("poison")
				}
				return nil
			})
			fine := uuid.New()
			publish(poison)
			publish(fine)
			testenv.Eventually(t, 20*time.Second, func() error {
				if err := handledAll(s, fine)(); err != nil {
					return err
				}
				if n := queueLen(queue + ".dead"); n != 1 {
					return fmt.Errorf("%d dead letters", n)
				}
				return drained(queue)()
			})
			stop()
			s.Lock()
			assert.Equal(t, []uuid.UUID{poison}, s.dead, "the dead-letter hook is told once")
			s.Unlock()

			// The database down: held, not dead-lettered.
			held := uuid.New()
			s, queue, stop = scenario("contract-held", func(_ uuid.UUID, call int) error {
				if call <= 2*contractDeliveryLimit+2 {
					return fmt.Errorf("the database went away: %w", io.ErrUnexpectedEOF)
				}
				return nil
			})
			publish(held)
			testenv.Eventually(t, 30*time.Second, func() error {
				if err := handledAll(s, held)(); err != nil {
					return err
				}
				s.Lock()
				calls := s.handled[held]
				s.Unlock()
				if calls <= 2*contractDeliveryLimit+2 {
					return fmt.Errorf("held %d times so far", calls)
				}
				return drained(queue)()
			})
			stop()
			assert.Zero(t, queueLen(queue+".dead"), "an outage dead-letters nothing")
			s.Lock()
			assert.Empty(t, s.dead)
			s.Unlock()

			// Shut down with work in hand (held while the database is down): the work is
			// neither acknowledged nor dead-lettered, and the next process does it.
			unfinished := uuid.New()
			s, queue, stop = scenario("contract-shutdown", func(uuid.UUID, int) error {
				return fmt.Errorf("the database went away: %w", io.ErrUnexpectedEOF)
			})
			publish(unfinished)
			testenv.Eventually(t, 15*time.Second, handledAll(s, unfinished))
			stop()
			s.Lock()
			assert.Empty(t, s.dead, "shutting down dead-letters nothing")
			s.Unlock()
			testenv.Eventually(t, 10*time.Second, func() error { // the broker requeues it when the channel closes
				if n := queueLen(queue); n != 1 {
					return fmt.Errorf("%d messages ready in %s, want the unfinished one", n, queue)
				}
				return nil
			})
			assert.Zero(t, queueLen(queue+".dead"))
			s, queue, stop = scenario("contract-shutdown", func(uuid.UUID, int) error { return nil })
			testenv.Eventually(t, 15*time.Second, handledAll(s, unfinished))
			testenv.Eventually(t, 15*time.Second, drained(queue))
			stop()
		})
	}
}
