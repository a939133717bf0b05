package projections_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/broker"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
	"github.com/chatbotsaas/chatbotd/projections"
)

// orgOrder is a projector that records, per process, which event of which organization
// it applied, in the order it applied them.
type orgOrder struct {
	process string
	log     *appliedLog
}

type appliedLog struct {
	sync.Mutex
	seqs map[uuid.UUID][]int // per organization, in the order applied
	by   map[string]int      // events applied per process
}

func (orgOrder) Name() string       { return "parted" }
func (orgOrder) Bindings() []string { return []string{"part.*"} }
func (o orgOrder) Apply(_ context.Context, _ pgx.Tx, e events.Envelope) error {
	var d struct{ Seq int }
	if err := json.Unmarshal(e.Data, &d); err != nil {
		return err
	}
	o.log.Lock()
	defer o.log.Unlock()
	o.log.seqs[*e.OrganizationID] = append(o.log.seqs[*e.OrganizationID], d.Seq)
	o.log.by[o.process]++
	return nil
}

// A partitioned projector is shared by the processes that run it, keeps each
// organization's events in order while processes join and leave, and switches from 4
// partitions to 2 (the old queues drained first) without losing or reordering an event;
// alone, fed single events, and as a group's member, fed frames.
func TestPartitionsShareAProjectorInOrder(t *testing.T) {
	t.Run("single events", func(t *testing.T) { testPartitions(t, false) })
	t.Run("frames", func(t *testing.T) { testPartitions(t, true) })
}

func testPartitions(t *testing.T, framed bool) {
	d, a := testenv.MustDatabase(t), testenv.MustAMQP(t)
	conn := broker.Dial(a.URL, testenv.Logger(t))
	defer conn.Close()
	log := &appliedLog{seqs: map[uuid.UUID][]int{}, by: map[string]int{}}
	base := a.Queue("parted")
	for _, n := range []int{2, 4} {
		for k := range n {
			a.Queue(fmt.Sprintf("parted.p%dof%d", k, n))
		}
	}
	defer func() {
		raw, err := amqp.Dial(a.URL)
		require.NoError(t, err)
		defer raw.Close()
		ch, err := raw.Channel()
		require.NoError(t, err)
		_ = ch.ExchangeDelete(base+".split", false, false)
	}()

	start := func(process string, partitions int) func() {
		var proj projections.Projector = orgOrder{process: process, log: log}
		if framed {
			proj = projections.NewGroup("parted", proj) // its queue takes frames
		}
		r, err := projections.NewRunner(d.Pool, conn, proj, projections.Config{
			Exchange: a.Exchange, QueuePrefix: a.QueuePrefix, BatchSize: 20, Logger: testenv.Logger(t)})
		require.NoError(t, err)
		p := &projections.Partitions{Pool: d.Pool, Broker: conn, Runners: []*projections.Runner{r}, Partitions: partitions,
			Tick: 100 * time.Millisecond, Logger: testenv.Logger(t).With("process", process)}
		stop := run(p.Run)
		t.Cleanup(stop)
		return stop
	}
	layout := func() (partitions int, draining *int) {
		err := d.Pool.QueryRow(context.Background(), `SELECT partitions, draining FROM projection_layouts WHERE projection = 'parted'`).
			Scan(&partitions, &draining)
		if err == pgx.ErrNoRows {
			return 1, nil
		}
		require.NoError(t, err)
		return partitions, draining
	}

	raw, err := amqp.Dial(a.URL)
	require.NoError(t, err)
	defer raw.Close()
	pub, err := raw.Channel()
	require.NoError(t, err)
	require.NoError(t, broker.DeclareEventExchange(pub, a.Exchange))
	orgs := make([]uuid.UUID, 16)
	next := map[uuid.UUID]int{}
	for i := range orgs {
		// Four organizations in each partition of 4 (and so of 2): random ones left one
		// partition empty about once in a hundred runs.
		for orgs[i] = uuid.New(); events.PartitionBucket(&orgs[i])%4 != i%4; orgs[i] = uuid.New() {
		}
	}
	total := 0
	publish := func(n int) {
		byOrg := map[uuid.UUID][]events.Envelope{} // framed: a frame per organization of the n
		for i := range n {
			org := orgs[i%len(orgs)]
			next[org]++
			e := events.Envelope{ID: uuid.New(), Type: "part.done", SchemaVersion: 1, StreamType: "part",
				StreamID: uuid.New(), StreamVersion: 1, Position: int64(total + 1), OrganizationID: &org,
				OccurredAt: time.Now().UTC(), Data: json.RawMessage(fmt.Sprintf(`{"seq":%d}`, next[org]))}
			total++
			if framed {
				byOrg[org] = append(byOrg[org], e)
				continue
			}
			body, err := json.Marshal(e)
			require.NoError(t, err)
			require.NoError(t, pub.Publish(a.Exchange, "part.done", false, false, amqp.Publishing{DeliveryMode: amqp.Persistent,
				Headers: amqp.Table{events.PartitionHeader: events.PartitionValue(events.PartitionBucket(&org))}, Body: body}))
		}
		for _, org := range orgs {
			if envs := byOrg[org]; len(envs) > 0 {
				testenv.PublishEvents(t, pub, a.Exchange, envs...)
			}
		}
	}
	appliedAll := func() error {
		log.Lock()
		defer log.Unlock()
		n := 0
		for _, s := range log.seqs {
			n += len(s)
		}
		if n != total {
			return fmt.Errorf("%d of %d events applied", n, total)
		}
		return nil
	}
	consumers := func(queue string) int {
		ch, err := raw.Channel()
		require.NoError(t, err)
		defer ch.Close()
		q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
		if err != nil {
			return -1
		}
		return q.Consumers
	}
	applied := func(process string) int {
		log.Lock()
		defer log.Unlock()
		return log.by[process]
	}

	// A process alone, on a projector never declared before: 4 partitions at once.
	stopA := start("a", 4)
	testenv.Eventually(t, 10*time.Second, func() error {
		for k := range 4 {
			if consumers(fmt.Sprintf("%s.p%dof4", base, k)) != 1 {
				return fmt.Errorf("partition %d not consumed", k)
			}
		}
		return nil
	})
	n, draining := layout()
	assert.Equal(t, 4, n)
	assert.Nil(t, draining, "nothing to drain on a new projector")
	assert.Equal(t, -1, consumers(base), "the single queue was never made")
	publish(400)
	testenv.Eventually(t, 15*time.Second, appliedAll)

	// A second process joins: the partitions are shared, one consumer each.
	stopB := start("b", 4)
	testenv.Eventually(t, 10*time.Second, func() error {
		if applied("b") > 0 {
			return nil
		}
		publish(16)
		return fmt.Errorf("b applied nothing yet")
	})
	beforeA := applied("a")
	publish(400)
	testenv.Eventually(t, 15*time.Second, appliedAll)
	assert.Positive(t, applied("a")-beforeA, "both processes apply their share")
	for k := range 4 {
		assert.Equal(t, 1, consumers(fmt.Sprintf("%s.p%dof4", base, k)), "one consumer per partition")
	}

	// One leaves: the other takes its partitions.
	stopA()
	publish(200)
	testenv.Eventually(t, 15*time.Second, appliedAll)

	// A process set to 2 partitions switches the layout while events flow; the running
	// process follows.
	stopC := start("c", 2)
	for range 20 {
		publish(20)
		time.Sleep(20 * time.Millisecond)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		if n, draining := layout(); n != 2 || draining != nil {
			return fmt.Errorf("layout %d, draining %v", n, draining)
		}
		return appliedAll()
	})
	publish(200)
	testenv.Eventually(t, 15*time.Second, appliedAll)
	for k := range 4 {
		assert.Equal(t, -1, consumers(fmt.Sprintf("%s.p%dof4", base, k)), "the old partitions are removed")
	}
	for k := range 2 {
		assert.Equal(t, 1, consumers(fmt.Sprintf("%s.p%dof2", base, k)))
	}
	stopB()
	stopC()
	// Each partition advanced a row of its own; together they counted every event once.
	var rows, counted int
	require.NoError(t, d.Pool.QueryRow(context.Background(), `SELECT count(*), sum(events_applied)
		FROM projection_positions WHERE split_part(projection, '#', 1) = 'parted'`).Scan(&rows, &counted))
	assert.Equal(t, total, counted)
	assert.Equal(t, 4, rows, "one row per partition index (the 2-partition layout reuses p0 and p1)")

	log.Lock()
	defer log.Unlock()
	for org, seqs := range log.seqs {
		for i, s := range seqs {
			if s != i+1 {
				t.Fatalf("organization %s: event %d applied in place %d (%v)", org, s, i+1, seqs)
			}
		}
	}
}
