package projections_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
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
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/broker"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
	"github.com/chatbotsaas/chatbotd/projections"
)

// Events the relay published and the broker confirmed, then lost (the group's queues
// purged, as a quorum queue's at-most-once dead-lettering or an operator would), are
// found by the sweep and published again to the group's queue alone: through one queue,
// and through a layout of two partitions (its split exchange). The sweep checks a stretch
// only once its queues have nothing waiting, checks each stretch once, and publishes
// nothing when nothing is missing. Every member ends with every event it binds, once.
// With a member that binds every event the sweep asks it alone (it applies every batch
// the group takes); without, it asks each member.
func TestSweepRedrivesWhatTheBrokerLost(t *testing.T) {
	t.Run("one queue", func(t *testing.T) { testSweep(t, 1, "#") })
	t.Run("two partitions", func(t *testing.T) { testSweep(t, 2, "#") })
	t.Run("no member takes every event", func(t *testing.T) { testSweep(t, 1, "chatbot.*") })
}

func testSweep(t *testing.T, partitions int, other string) {
	ctx := context.Background()
	env := newGroupEnv(t)
	users, others := env.member("swusers", "user.*"), env.member("swother", other)
	const name = "swept"
	queues := []string{env.a.Queue(name)}
	env.a.Queue("swusers") // the members' dead-letter queues
	env.a.Queue("swother")
	if partitions > 1 {
		env.a.Partitioned(name, partitions)
		queues = nil
		for k := range partitions {
			queues = append(queues, fmt.Sprintf("%s%s.p%dof%d", env.a.QueuePrefix, name, k, partitions))
		}
	}
	runner := env.runner(projections.NewGroup(name, users, others))
	env.relayFrames(runner)
	consume := func() func() {
		p := &projections.Partitions{Pool: env.d.Pool, Broker: env.conn, Runners: []*projections.Runner{runner},
			Partitions: partitions, Tick: 100 * time.Millisecond, Logger: testenv.Logger(t)}
		stop := run(p.Run)
		t.Cleanup(stop)
		for _, q := range queues {
			env.a.WaitConsumer(q)
		}
		return stop
	}
	stopConsuming := consume()
	sweep := &projections.Sweep{Pool: env.d.Pool, Broker: env.conn, Runners: []*projections.Runner{runner},
		Interval: time.Hour, Grace: 10 * time.Millisecond, Logger: testenv.Logger(t)}

	// Two organizations, in the two partitions of a layout of two.
	var orgs [2]uuid.UUID
	for i := range orgs {
		for orgs[i] = uuid.New(); events.PartitionBucket(&orgs[i])%2 != i; orgs[i] = uuid.New() {
		}
	}
	specs := map[string]events.Spec{}
	for _, s := range events.Catalog() {
		specs[s.Type] = s
	}
	var appended []events.Envelope // id and type
	// add appends an event of typ as version of stream, and waits until it is published.
	add := func(typ string, stream uuid.UUID, version int, org uuid.UUID) {
		id := uuid.New()
		_, err := eventstore.NewStore(env.d.Pool).Append(ctx, eventstore.AppendRequest{StreamType: events.StreamTypeOf(typ),
			StreamID: stream, ExpectedVersion: version - 1, OrganizationID: &org, Events: []events.Event{specs[typ].Zero()},
			EventIDs: []uuid.UUID{id}})
		require.NoError(t, err)
		appended = append(appended, events.Envelope{ID: id, Type: typ})
		waitPublished(t, env.d.Pool)
	}
	// applied checks that each member applied every event it binds but those of lost.
	applied := func(lost ...uuid.UUID) func() error {
		return func() error {
			for _, m := range []member{users, others} {
				match, want := events.TopicMatcher(m.bindings), 0
				for _, e := range appended {
					if match(e.Type) && !slices.Contains(lost, e.ID) {
						want++
					}
				}
				if got, _ := m.seen(); len(got) != want {
					return fmt.Errorf("%s applied %d of %d events", m.name, len(got), want)
				}
			}
			return nil
		}
	}
	lose := func() { // what the queues hold is lost
		for _, q := range queues {
			_, err := env.ch.QueuePurge(q, false)
			require.NoError(t, err)
		}
	}
	pass := func() projections.SweepPass {
		res, err := sweep.Pass(ctx, runner)
		require.NoError(t, err)
		return res
	}
	var redriven int64
	recorded := func() int64 {
		require.NoError(t, env.d.Pool.QueryRow(ctx, `SELECT redriven FROM projection_sweeps WHERE name = $1`, name).Scan(&redriven))
		return redriven
	}

	alice, bot := uuid.New(), uuid.New()
	add("user.created", alice, 1, orgs[0])
	add("chatbot.created", bot, 1, orgs[1])
	testenv.Eventually(t, 15*time.Second, applied())
	assert.Equal(t, projections.SweepPass{}, pass(), "the first pass starts at the relay's checkpoint")

	stopConsuming()
	bob := uuid.New()
	add("user.created", bob, 1, orgs[1])
	add("user.updated", alice, 2, orgs[0]) // the last version of a stream the members have
	add("chatbot.updated", bot, 2, orgs[1])
	lose()
	assert.Equal(t, projections.SweepPass{}, pass(), "the second sets where the next stops: nothing is checked yet")

	add("chatbot.created", uuid.New(), 1, orgs[0]) // waits in its queue
	assert.Equal(t, projections.SweepPass{Postponed: true}, pass(), "a message is waiting: the stretch is not checked")
	lose()

	assert.Equal(t, projections.SweepPass{Checked: 3, Redriven: 3}, pass(), "the three lost events of the stretch, published again")
	assert.EqualValues(t, 3, recorded())
	consume()
	lostWhileWaiting := appended[len(appended)-1].ID
	testenv.Eventually(t, 15*time.Second, applied(lostWhileWaiting))

	add("user.updated", bob, 2, orgs[1]) // applied as it comes, after the next stretch
	testenv.Eventually(t, 15*time.Second, applied(lostWhileWaiting))
	if partitions == 1 {
		// One queue, one consumer: it has applied an event published after the stretch, so
		// it has had all of it; what it lacks is lost, without a grace.
		sweep.Grace = time.Hour
	}
	assert.Equal(t, projections.SweepPass{Checked: 1, Redriven: 1}, pass(), "the next stretch: the event lost while it waited")
	sweep.Grace = 10 * time.Millisecond
	testenv.Eventually(t, 15*time.Second, applied())

	assert.Equal(t, projections.SweepPass{Checked: 1}, pass(), "the event applied as it came: nothing missing, nothing published")
	assert.EqualValues(t, 4, recorded())

	for _, m := range []member{users, others} {
		got, dead := m.seen()
		assert.Empty(t, dead)
		sorted := slices.Clone(got)
		slices.SortFunc(sorted, func(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) })
		assert.Equal(t, len(sorted), len(slices.Compact(sorted)), "%s applied an event twice", m.name)
	}
}

// waitPublished waits until the relay has published every committed event.
func waitPublished(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() error {
		st, err := eventstore.RelayLag(context.Background(), pool, "")
		if err == nil && st.Behind > 0 {
			err = fmt.Errorf("%d events not published yet", st.Behind)
		}
		return err
	})
}

// gated is a projector whose applies wait until its gate opens.
type gated struct {
	pool *pgxpool.Pool
	gate chan struct{}
}

func (gated) Name() string       { return "gated" }
func (gated) Bindings() []string { return []string{"#"} }
func (g gated) Apply(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
	select {
	case <-g.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	_, err := tx.Exec(ctx, `INSERT INTO grp_applied (member, event_id) VALUES ('gated', $1)`, e.ID)
	return err
}

// An event that a consumer holds, delivered and not yet applied, while its queue is empty,
// is not taken for lost: the sweep looks again a grace later, finds that the consumer has
// applied something meanwhile, and leaves the stretch to a later pass, which finds it
// applied.
func TestSweepLooksAgainBeforeItPublishes(t *testing.T) {
	ctx := context.Background()
	env := newGroupEnv(t)
	g := gated{pool: env.d.Pool, gate: make(chan struct{})}
	open := sync.OnceFunc(func() { close(g.gate) })
	t.Cleanup(open)
	queue := env.a.Queue(g.Name())
	runner := env.runner(g)
	relay, err := eventstore.NewRelay(env.d.Pool, env.conn, eventstore.RelayConfig{Exchange: env.a.Exchange,
		Queues: []broker.QueueSpec{runner.Queue()}, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	t.Cleanup(run(relay.Run))
	sweep := &projections.Sweep{Pool: env.d.Pool, Broker: env.conn, Runners: []*projections.Runner{runner},
		Interval: time.Hour, Grace: 2 * time.Second, Logger: testenv.Logger(t)}
	pass := func() projections.SweepPass {
		res, err := sweep.Pass(ctx, runner)
		require.NoError(t, err)
		return res
	}

	require.Equal(t, projections.SweepPass{}, pass())
	org := uuid.New()
	_, err = eventstore.NewStore(env.d.Pool).Append(ctx, eventstore.AppendRequest{StreamType: events.StreamUser,
		StreamID: uuid.New(), OrganizationID: &org, Events: []events.Event{events.UserCreated{}}})
	require.NoError(t, err)
	waitPublished(t, env.d.Pool)
	require.Equal(t, projections.SweepPass{}, pass())

	t.Cleanup(run(runner.Run)) // takes the event and holds it at the gate
	env.a.WaitConsumer(queue)
	testenv.Eventually(t, 10*time.Second, func() error {
		if n, _ := env.depth(queue); n > 0 {
			return fmt.Errorf("%d messages wait in the queue", n)
		}
		return nil
	})
	time.AfterFunc(500*time.Millisecond, open)
	assert.Equal(t, projections.SweepPass{Postponed: true}, pass(), "it applied during the grace: still busy, nothing published")
	assert.Equal(t, projections.SweepPass{Checked: 1}, pass(), "applied, as the next pass finds")
	applied, _ := member{name: "gated", pool: env.d.Pool, mu: &sync.Mutex{}, dead: &[]uuid.UUID{}}.seen()
	assert.Len(t, applied, 1)
}

// A pass while the database or the broker is down fails with an error, within the
// broker's wait, and holds nothing: the next pass, once they are back, goes on. Run
// logs a failed pass and tries again, and finishes its pass once both are back and the
// consumer has applied what its queue held.
func TestSweepPassFailsWhileADependencyIsDown(t *testing.T) {
	ctx := context.Background()
	env := newGroupEnv(t)
	users := env.member("dnusers", "#")
	const name = "downswept"
	queue := env.a.Queue(name)
	env.a.Queue("dnusers")
	runner := env.runner(projections.NewGroup(name, users))
	env.relayFrames(runner)

	// The sweep reaches PostgreSQL and RabbitMQ (the servers the tests use) through
	// proxies it can lose.
	cfg, err := pgxpool.ParseConfig(env.d.URL)
	require.NoError(t, err)
	pgProxy := testenv.MustProxy(t, net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port))))
	host, port, err := net.SplitHostPort(pgProxy.Addr())
	require.NoError(t, err)
	cfg.ConnConfig.Host = host
	_, err = fmt.Sscan(port, &cfg.ConnConfig.Port)
	require.NoError(t, err)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	amqpURL, err := url.Parse(env.a.URL)
	require.NoError(t, err)
	amqpProxy := testenv.MustProxy(t, amqpURL.Host)
	amqpURL.Host = amqpProxy.Addr()
	bc := broker.Dial(amqpURL.String(), testenv.Logger(t))
	t.Cleanup(func() { bc.Close() })
	sweep := &projections.Sweep{Pool: pool, Broker: bc, Runners: []*projections.Runner{runner},
		Interval: time.Hour, Grace: 10 * time.Millisecond, BrokerWait: 500 * time.Millisecond, Logger: testenv.Logger(t)}

	pass := func() (projections.SweepPass, error) {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return sweep.Pass(pctx, runner)
	}
	res, err := pass()
	require.NoError(t, err)
	require.Equal(t, projections.SweepPass{}, res, "the first pass starts at the relay's checkpoint")
	org := uuid.New()
	_, err = eventstore.NewStore(env.d.Pool).Append(ctx, eventstore.AppendRequest{StreamType: events.StreamUser,
		StreamID: uuid.New(), OrganizationID: &org, Events: []events.Event{events.UserCreated{Name: "Nia",
			Email: "nia@example.com", Roles: []string{"member"}, Status: "active"}}})
	require.NoError(t, err)
	waitPublished(t, env.d.Pool)
	res, err = pass()
	require.NoError(t, err)
	require.Equal(t, projections.SweepPass{}, res, "the second pass sets the stretch to check")

	pgProxy.Cut()
	_, err = pass()
	require.Error(t, err, "a pass without its database")
	pgProxy.Restore()

	amqpProxy.Cut()
	start := time.Now()
	_, err = pass() // the stretch is due: the pass asks the broker whether the queue holds messages
	require.Error(t, err, "a pass without its broker")
	assert.Less(t, time.Since(start), 10*time.Second, "the pass waited for the broker past its BrokerWait")
	amqpProxy.Restore()

	res, err = pass()
	require.NoError(t, err, "the next pass, with both back")
	assert.True(t, res.Postponed, "the queue holds the event's frame: the pass is put off")

	// Run, through both outages, then with the consumer applying what the queue holds.
	sweep.Interval = 200 * time.Millisecond
	pgProxy.Cut()
	amqpProxy.Cut()
	t.Cleanup(run(sweep.Run))
	time.Sleep(time.Second)
	pgProxy.Restore()
	amqpProxy.Restore()
	t.Cleanup(run(runner.Run))
	env.a.WaitConsumer(queue)
	testenv.Eventually(t, 15*time.Second, func() error {
		var done bool
		err := env.d.Pool.QueryRow(ctx, `SELECT swept_at IS NOT NULL AND (transaction_id, position) = (bound_transaction_id, bound_position)
			FROM projection_sweeps WHERE name = $1`, name).Scan(&done)
		if err == nil && !done {
			err = errors.New("the stretch is not checked yet")
		}
		return err
	})
}

// relayFrames runs a relay, with frames, for the test's exchange until the test ends; it
// declares the recorded layout's queues of runner, as serve's does.
func (env *groupEnv) relayFrames(runner *projections.Runner) {
	relay, err := eventstore.NewRelay(env.d.Pool, env.conn, eventstore.RelayConfig{Exchange: env.a.Exchange, Frames: true,
		Declare: func(ctx context.Context, ch *amqp.Channel) error {
			return projections.DeclareLayouts(ctx, env.d.Pool, ch, []*projections.Runner{runner})
		}, Logger: testenv.Logger(env.t)})
	require.NoError(env.t, err)
	env.t.Cleanup(run(relay.Run))
}
