package projections_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/broker"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
	"github.com/chatbotsaas/chatbotd/projections"
)

// member is a projector of a test group: it records what it applies in grp_applied (in
// its transaction, as a read model would) and what was dead-lettered for it; an event in
// poison fails it while poisoned is set.
type member struct {
	name     string
	bindings []string
	pool     *pgxpool.Pool
	mu       *sync.Mutex
	dead     *[]uuid.UUID
	poison   *uuid.UUID
	poisoned *bool
}

func (env *groupEnv) member(name string, bindings ...string) member {
	return member{name: name, bindings: bindings, pool: env.d.Pool, mu: &sync.Mutex{}, dead: &[]uuid.UUID{},
		poison: &uuid.UUID{}, poisoned: new(bool)}
}

func (m member) Name() string       { return m.name }
func (m member) Bindings() []string { return m.bindings }
func (m member) Apply(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
	m.mu.Lock()
	poisoned := *m.poisoned && e.ID == *m.poison
	m.mu.Unlock()
	if poisoned {
		return errors.New("poison to " + m.name)
	}
	_, err := tx.Exec(ctx, `INSERT INTO grp_applied (member, event_id) VALUES ($1, $2)`, m.name, e.ID)
	return err
}
func (m member) DeadLettered(_ context.Context, e events.Envelope, _ error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	*m.dead = append(*m.dead, e.ID)
}

// seen is what m applied, in the order it applied it, and what was dead-lettered for it.
func (m member) seen() (applied, dead []uuid.UUID) {
	rows, err := m.pool.Query(context.Background(), `SELECT event_id FROM grp_applied WHERE member = $1 ORDER BY n`, m.name)
	if err == nil {
		applied, err = pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	}
	if err != nil {
		panic(err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return applied, slices.Clone(*m.dead)
}

type groupEnv struct {
	t    *testing.T
	d    testenv.Database
	a    *testenv.AMQP
	conn *broker.Conn
	ch   *amqp.Channel
}

func newGroupEnv(t *testing.T) *groupEnv {
	env := &groupEnv{t: t, d: testenv.MustDatabase(t), a: testenv.MustAMQP(t)}
	env.conn = broker.Dial(env.a.URL, testenv.Logger(t))
	t.Cleanup(func() { env.conn.Close() })
	_, env.ch = env.a.MustEventChannel(t)
	_, err := env.d.Pool.Exec(context.Background(), `CREATE TABLE grp_applied (n bigserial PRIMARY KEY, member text NOT NULL, event_id uuid NOT NULL)`)
	require.NoError(t, err)
	return env
}

func (env *groupEnv) runner(p projections.Projector) *projections.Runner {
	return env.runnerLingering(p, 0)
}

// runnerLingering is runner with a batch waiting up to linger for more messages after
// its first (0: the default).
func (env *groupEnv) runnerLingering(p projections.Projector, linger time.Duration) *projections.Runner {
	r, err := projections.NewRunner(env.d.Pool, env.conn, p, projections.Config{Exchange: env.a.Exchange,
		QueuePrefix: env.a.QueuePrefix, DeliveryLimit: 3, Attempts: 2, Linger: linger, Logger: testenv.Logger(env.t)})
	require.NoError(env.t, err)
	return r
}

// event is an event of type typ, the first of a stream of its own.
func event(typ string) events.Envelope {
	return events.Envelope{ID: uuid.New(), Type: typ, SchemaVersion: 1, StreamType: "grp", StreamID: uuid.New(),
		StreamVersion: 1, Position: 1, OccurredAt: time.Now().UTC(), Data: json.RawMessage(`{}`)}
}

// publish publishes an event of type typ as the relay does (alone, and in a frame of its
// own), and returns its id.
func (env *groupEnv) publish(typ string) uuid.UUID {
	e := event(typ)
	testenv.PublishEvents(env.t, env.ch, env.a.Exchange, e)
	return e.ID
}

// publishFrame publishes envs as the relay publishes one batch of them: each alone, and
// all in one frame.
func (env *groupEnv) publishFrame(envs ...events.Envelope) {
	testenv.PublishEvents(env.t, env.ch, env.a.Exchange, envs...)
}

func (env *groupEnv) depth(queue string) (int, bool) {
	ch, err := env.conn.Channel(context.Background())
	require.NoError(env.t, err)
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	var ae *amqp.Error
	if errors.As(err, &ae) && ae.Code == amqp.NotFound {
		return 0, false
	}
	require.NoError(env.t, err)
	return q.Messages, true
}

// A group's members share one queue: each applies its share (its bindings) of every
// batch. An event that is poison to one member is dead-lettered into that member's
// dead-letter queue alone, while the other members apply it and the group's queue
// flows; once the member is mended, a redrive brings the event back through the group's
// queue, the member applies it and the others skip it as applied.
func TestGroupDeadLettersAPoisonEventForItsMemberOnly(t *testing.T) {
	env := newGroupEnv(t)
	a, b := env.member("grp-a", "grp.*"), env.member("grp-b", "grp.*", "other.*")
	for _, name := range []string{"grp", "grp-a", "grp-b"} {
		env.a.Queue(name)
	}
	r := env.runner(projections.NewGroup("grp", a, b))
	stop := run(r.Run)
	defer func() { stop() }()
	env.a.WaitConsumer(env.a.QueuePrefix + "grp")

	// The poison is in the middle of a frame: the frame's other events are applied, and
	// the poison alone is dead-lettered, as an event of its own.
	firstE, poisonE, lastE := event("grp.first"), event("grp.poison"), event("grp.last")
	first, poison, last := firstE.ID, poisonE.ID, lastE.ID
	*a.poison, *a.poisoned = poison, true
	env.publishFrame(firstE, poisonE, lastE)
	other := env.publish("other.only") // b's alone

	testenv.Eventually(t, 20*time.Second, func() error {
		if _, dead := a.seen(); len(dead) != 1 {
			return fmt.Errorf("a: %d dead letters", len(dead))
		}
		if applied, _ := b.seen(); len(applied) != 4 {
			return fmt.Errorf("b applied %d", len(applied))
		}
		if n, _ := env.depth(env.a.QueuePrefix + "grp"); n != 0 {
			return fmt.Errorf("%d messages left in the group's queue", n)
		}
		return nil
	})
	appliedA, deadA := a.seen()
	appliedB, deadB := b.seen()
	assert.ElementsMatch(t, []uuid.UUID{first, last}, appliedA, "a applies its share but the poison")
	assert.Equal(t, []uuid.UUID{poison}, deadA)
	assert.ElementsMatch(t, []uuid.UUID{first, poison, last, other}, appliedB, "b applies the event that is poison to a")
	assert.Empty(t, deadB)
	n, _ := env.depth(env.a.QueuePrefix + "grp-a.dead")
	assert.Equal(t, 1, n, "the poison waits in a's dead-letter queue")
	n, _ = env.depth(env.a.QueuePrefix + "grp-b.dead")
	assert.Zero(t, n)
	n, _ = env.depth(env.a.QueuePrefix + "grp.dead")
	assert.Zero(t, n, "the group's own dead-letter queue is for what no member could take")
	for _, own := range []string{"grp-a", "grp-b"} {
		_, exists := env.depth(env.a.QueuePrefix + own)
		assert.False(t, exists, "no queue of %s's own: the broker writes each event once", own)
	}

	// Listed as a's, with the broker's reason; mended and redriven.
	letters, err := projections.ListDeadLetters(context.Background(), env.conn, r.MemberQueue("grp-a"), 10)
	require.NoError(t, err)
	require.Len(t, letters, 1)
	assert.Equal(t, poison.String(), letters[0].EventID)
	// The dead letter is the poison alone, as the event exchange carries it.
	dch, err := env.conn.Channel(context.Background())
	require.NoError(t, err)
	m, ok, err := dch.Get(env.a.QueuePrefix+"grp-a.dead", false)
	require.NoError(t, err)
	require.True(t, ok)
	_, framed := m.Headers[broker.FrameHeader]
	assert.False(t, framed)
	dead, err := events.DecodeEnvelope(m.Body)
	require.NoError(t, err)
	assert.Equal(t, poison, dead.ID)
	require.NoError(t, dch.Close()) // back to the queue
	assert.Equal(t, "rejected", letters[0].Reason)
	assert.NotNil(t, letters[0].DeadLetteredAt)
	a.mu.Lock()
	*a.poisoned = false
	a.mu.Unlock()
	moved, err := projections.Redrive(context.Background(), env.d.Pool, env.conn,
		projections.Tracked{Name: "grp-a", Queue: r.MemberQueue("grp-a"), Positions: true, Layout: "grp"}, 10)
	require.NoError(t, err)
	assert.Equal(t, 1, moved)
	testenv.Eventually(t, 15*time.Second, func() error {
		if applied, _ := a.seen(); !slices.Contains(applied, poison) {
			return errors.New("the redriven event is not applied yet")
		}
		return nil
	})
	stop()
	appliedB, _ = b.seen()
	assert.Len(t, appliedB, 4, "b skips the redriven event: it applied it before")
	n, _ = env.depth(env.a.QueuePrefix + "grp-a.dead")
	assert.Zero(t, n)
}

// A member's own queue, which an earlier version consumed, is retired when the group
// takes over: what waited in it is applied before anything of the group's queue, the
// queue is deleted, and its layout is recorded as retired.
func TestRetiredQueuesDrainBeforeTheGroupConsumes(t *testing.T) {
	env := newGroupEnv(t)
	for _, name := range []string{"grp", "grp-a", "grp-b"} {
		env.a.Queue(name)
	}
	a, b := env.member("grp-a", "grp.*"), env.member("grp-b", "grp.*")
	// The earlier version's queues, with a backlog.
	alone := []*projections.Runner{env.runner(a), env.runner(b)}
	for _, r := range alone {
		require.NoError(t, broker.DeclareQueue(env.ch, r.Queue()))
	}
	var backlog []uuid.UUID
	for range 30 {
		backlog = append(backlog, env.publish("grp.early"))
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if n, _ := env.depth(env.a.QueuePrefix + "grp-a"); n != len(backlog) {
			return fmt.Errorf("%d of the backlog in a's queue", n)
		}
		return nil
	})

	// Serving declares the group's layout before its workers start, then runs Partitions.
	group := env.runner(projections.NewGroup("grp", a, b))
	require.NoError(t, projections.DeclareLayouts(context.Background(), env.d.Pool, env.ch, []*projections.Runner{group}))
	p := &projections.Partitions{Pool: env.d.Pool, Broker: env.conn, Runners: []*projections.Runner{group}, Retired: alone,
		Partitions: 1, Tick: 50 * time.Millisecond, Logger: testenv.Logger(t), Group: "grp"}
	stop := run(p.Run)
	defer func() { stop() }()
	var later []uuid.UUID
	for range 10 {
		later = append(later, env.publish("grp.late"))
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		for _, m := range []member{a, b} {
			if applied, _ := m.seen(); len(applied) < len(backlog)+len(later) {
				return fmt.Errorf("%s applied %d", m.name, len(applied))
			}
		}
		for _, own := range []string{"grp-a", "grp-b"} {
			if _, exists := env.depth(env.a.QueuePrefix + own); exists {
				return fmt.Errorf("%s's own queue is still there", own)
			}
			// The drain's end is recorded in the transaction that removes the queues, and
			// commits after them.
			var draining *int
			if err := env.d.Pool.QueryRow(context.Background(),
				`SELECT draining FROM projection_layouts WHERE projection = $1`, own).Scan(&draining); err != nil || draining != nil {
				return fmt.Errorf("%s's drain not recorded as ended (%v)", own, err)
			}
		}
		return nil
	})
	stop()
	for _, m := range []member{a, b} {
		applied, dead := m.seen()
		assert.Empty(t, dead)
		assert.ElementsMatch(t, backlog, applied[:len(backlog)], "%s: the backlog of its own queue first", m.name)
		assert.ElementsMatch(t, later, applied[len(backlog):], "%s: then the group's queue", m.name)
		assert.Len(t, applied, len(backlog)+len(later), "%s: each event once", m.name)
		var partitions int
		var draining *int
		require.NoError(t, env.d.Pool.QueryRow(context.Background(),
			`SELECT partitions, draining FROM projection_layouts WHERE projection = $1`, m.name).Scan(&partitions, &draining))
		assert.Zero(t, partitions, "%s: retired", m.name)
		assert.Nil(t, draining)
	}
}

// cutter is a member that cuts the broker's connection in the middle of its last attempt
// at the poison event, just before the runtime would copy it into its dead letters.
type cutter struct {
	member
	proxy *testenv.Proxy
	calls *int
	cut   chan struct{}
}

func (c cutter) Apply(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
	err := c.member.Apply(ctx, tx, e)
	if err == nil {
		return nil
	}
	c.mu.Lock()
	*c.calls++
	last := *c.calls == 4 // the batch, the member's share, and two attempts (Attempts: 2)
	c.mu.Unlock()
	if last {
		c.proxy.Cut()
		time.Sleep(300 * time.Millisecond) // the client sees its connection closed
		close(c.cut)
	}
	return err
}

// The broker goes away while a member's poison event is being dead-lettered: the delivery
// can no longer be acknowledged, so it is not copied then; the batch comes back once the
// broker does, and the poison is dead-lettered once, the other member having applied
// every event once.
func TestGroupDeadLetterWhenTheBrokerGoesAway(t *testing.T) {
	env := newGroupEnv(t)
	proxy := testenv.MustProxy(t, "127.0.0.1:5672")
	conn := broker.Dial("amqp://guest:guest@"+proxy.Addr()+"/", testenv.Logger(t))
	t.Cleanup(func() { conn.Close() })
	a := cutter{member: env.member("cut-a", "cut.*"), proxy: proxy, calls: new(int), cut: make(chan struct{})}
	b := env.member("cut-b", "cut.*")
	for _, name := range []string{"cut", "cut-a", "cut-b"} {
		env.a.Queue(name)
	}
	r, err := projections.NewRunner(env.d.Pool, conn, projections.NewGroup("cut", a, b), projections.Config{Exchange: env.a.Exchange,
		QueuePrefix: env.a.QueuePrefix, DeliveryLimit: 3, Attempts: 2, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	stop := run(r.Run)
	defer func() { stop() }()
	env.a.WaitConsumer(env.a.QueuePrefix + "cut")

	firstE, poisonE, lastE := event("cut.first"), event("cut.poison"), event("cut.last")
	first, last := firstE.ID, lastE.ID
	*a.poison, *a.poisoned = poisonE.ID, true
	env.publishFrame(firstE, poisonE, lastE)

	select {
	case <-a.cut:
	case <-time.After(20 * time.Second):
		t.Fatal("the poison's last attempt never came")
	}
	time.Sleep(500 * time.Millisecond)
	proxy.Restore()
	testenv.Eventually(t, 30*time.Second, func() error {
		if n, _ := env.depth(env.a.QueuePrefix + "cut-a.dead"); n == 0 {
			return errors.New("not dead-lettered yet")
		}
		if n, _ := env.depth(env.a.QueuePrefix + "cut"); n != 0 {
			return fmt.Errorf("%d messages left in the group's queue", n)
		}
		return nil
	})
	time.Sleep(500 * time.Millisecond) // a second copy would be made by now
	stop()
	appliedA, deadA := a.seen()
	appliedB, _ := b.seen()
	assert.ElementsMatch(t, []uuid.UUID{first, last}, appliedA)
	assert.ElementsMatch(t, []uuid.UUID{first, *a.poison, last}, appliedB, "each event applied once by the other member")
	assert.Equal(t, []uuid.UUID{*a.poison}, deadA, "the dead-letter hook is told once")
	n, _ := env.depth(env.a.QueuePrefix + "cut-a.dead")
	assert.Equal(t, 1, n, "one copy in the member's dead letters")
}

// A frame dead-lettered whole (past the delivery limit, into the group's own dead letters)
// is listed event by event, each naming the frame, and a redrive sends it back whole: the
// members apply its events.
func TestAGroupsDeadFrameIsListedByEventAndRedrivenWhole(t *testing.T) {
	env := newGroupEnv(t)
	a := env.member("dead-a", "grp.*")
	for _, name := range []string{"dead", "dead-a"} {
		env.a.Queue(name)
	}
	r := env.runner(projections.NewGroup("dead", a))
	stop := run(r.Run)
	defer func() { stop() }()
	env.a.WaitConsumer(env.a.QueuePrefix + "dead")

	envs := []events.Envelope{event("grp.one"), event("grp.two")}
	var frame []byte
	for _, e := range envs {
		body, err := e.MarshalJSON()
		require.NoError(t, err)
		frame = events.AppendFrame(frame, body)
	}
	require.NoError(t, env.ch.Publish("", r.Queue().DeadQueue(), false, false, amqp.Publishing{DeliveryMode: amqp.Persistent,
		MessageId: "frame:" + envs[0].ID.String(), Body: events.CloseFrame(frame),
		Headers: amqp.Table{broker.FrameHeader: int32(2), "x-first-death-reason": "delivery_limit"}}))
	testenv.Eventually(t, 5*time.Second, func() error {
		if n, _ := env.depth(r.Queue().DeadQueue()); n != 1 {
			return fmt.Errorf("%d dead letters", n)
		}
		return nil
	})

	letters, err := projections.ListDeadLetters(context.Background(), env.conn, r.Queue(), 10)
	require.NoError(t, err)
	require.Len(t, letters, 2, "one line per event of the frame")
	for i, l := range letters {
		assert.Equal(t, envs[i].ID.String(), l.EventID)
		assert.Equal(t, "frame:"+envs[0].ID.String(), l.Frame)
		assert.Equal(t, "delivery_limit", l.Reason)
		assert.False(t, l.Undecodable)
	}

	moved, err := projections.Redrive(context.Background(), env.d.Pool, env.conn,
		projections.Tracked{Name: "dead", Queue: r.Queue(), Layout: "dead"}, 10)
	require.NoError(t, err)
	assert.Equal(t, 1, moved, "the frame goes back whole")
	testenv.Eventually(t, 15*time.Second, func() error {
		if applied, _ := a.seen(); len(applied) != 2 {
			return fmt.Errorf("applied %d of the frame's events", len(applied))
		}
		return nil
	})
	applied, _ := a.seen()
	assert.Equal(t, []uuid.UUID{envs[0].ID, envs[1].ID}, applied)
}
