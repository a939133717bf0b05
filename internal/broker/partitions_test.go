package broker_test

import (
	"strconv"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/broker"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// A layout routes each bucket to one partition's queue, a switch routes every message to
// the old or the new layout at every moment, a fence ends an old queue, and a drained
// queue is removed only when it has neither messages nor consumers.
func TestLayoutRoutesBucketsToPartitions(t *testing.T) {
	a := testenv.MustAMQP(t)
	conn, ch := a.MustEventChannel(t)
	base := broker.QueueSpec{Name: a.Queue("parted"), Exchange: a.Exchange, Bindings: []string{"part.*"}, DeliveryLimit: 3,
		SingleActiveConsumer: true}
	layout := func(n int) broker.Layout {
		return broker.Layout{Base: base, Partitions: n, Header: "partition", Buckets: 8}
	}
	for _, n := range []int{2, 4} {
		for _, q := range layout(n).Queues() {
			a.Queue(q.Name[len(a.QueuePrefix):])
		}
	}
	defer func() { _ = ch.ExchangeDelete(layout(2).SplitExchange(), false, false) }()
	publish := func(bucket int) {
		require.NoError(t, ch.Publish(a.Exchange, "part.done", true, false, amqp.Publishing{
			Headers: amqp.Table{"partition": strconv.Itoa(bucket)}, Body: []byte(strconv.Itoa(bucket))}))
	}
	depth := queueDepth(t, conn)
	wantDepths := func(l broker.Layout, want ...int) {
		t.Helper()
		testenv.Eventually(t, 5*time.Second, func() error {
			for k, w := range want {
				if got := depth(l.Queue(k).Name); got != w {
					return assertErr{l.Queue(k).Name, got, w}
				}
			}
			return nil
		})
	}

	require.NoError(t, layout(1).Declare(ch))
	require.NoError(t, layout(4).Declare(ch))
	require.NoError(t, layout(1).Detach(ch))
	for b := range 8 {
		publish(b)
	}
	wantDepths(layout(4), 2, 2, 2, 2) // buckets k and k+4
	wantDepths(layout(1), 0)

	// 4 → 2: the new bindings come first, then the old ones go.
	require.NoError(t, layout(2).Declare(ch))
	publish(1) // both layouts take it meanwhile: a duplicate, never a loss
	require.NoError(t, layout(4).Detach(ch))
	publish(3)
	wantDepths(layout(4), 2, 3, 2, 2)
	wantDepths(layout(2), 0, 2)
	require.NoError(t, layout(4).Fence(ch))
	wantDepths(layout(4), 3, 4, 3, 3)

	// A partition's dead letters go to the base queue's dead-letter queue.
	cons, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, cons.Qos(1, 0, false))
	ds, err := cons.Consume(layout(2).Queue(1).Name, "", false, false, false, false, nil)
	require.NoError(t, err)
	require.NoError(t, (<-ds).Nack(false, false))
	require.NoError(t, cons.Close())
	testenv.Eventually(t, 5*time.Second, func() error {
		if got := depth(base.DeadQueue()); got != 1 {
			return assertErr{base.DeadQueue(), got, 1}
		}
		return nil
	})

	// Removing refuses a queue with messages; an empty one goes.
	rm, err := conn.Channel()
	require.NoError(t, err)
	defer rm.Close()
	assert.ErrorContains(t, layout(4).Remove(rm, 0), "3 messages")
	_, err = ch.QueuePurge(layout(4).Queue(0).Name, false)
	require.NoError(t, err)
	require.NoError(t, layout(4).Remove(rm, 0))
	require.NoError(t, layout(4).Remove(rm, 0), "a queue already removed")
}

// queueDepth reads a queue's message count, each time on a channel of its own.
func queueDepth(t *testing.T, conn *amqp.Connection) func(name string) int {
	return func(name string) int {
		c, err := conn.Channel()
		require.NoError(t, err)
		defer c.Close()
		q, err := c.QueueDeclarePassive(name, true, false, false, false, nil)
		require.NoError(t, err)
		return q.Messages
	}
}

type assertErr struct {
	queue     string
	got, want int
}

func (e assertErr) Error() string {
	return e.queue + ": " + strconv.Itoa(e.got) + " messages, want " + strconv.Itoa(e.want)
}

// A queue of frames takes the frames exchange's messages and no single event, also when an
// earlier version had bound it by its patterns; a partitioned layout of it routes frames
// by their bucket, and its split exchange takes no single event either. The alternate
// exchange keeps nothing once the event exchange is declared again, whatever an earlier
// version bound to it.
func TestFramesTakeThePlaceOfSingleEvents(t *testing.T) {
	a := testenv.MustAMQP(t)
	conn, ch := a.MustEventChannel(t)
	unrouted := a.Exchange + broker.UnroutedSuffix
	// The earlier version's topology: the unrouted queue bound to the alternate exchange,
	// the group's queue and split exchange bound by patterns.
	_, err := ch.QueueDeclare(unrouted, true, false, false, false, amqp.Table{"x-queue-type": "quorum"})
	require.NoError(t, err)
	require.NoError(t, ch.QueueBind(unrouted, "", unrouted, false, nil))
	base := broker.QueueSpec{Name: a.Queue("group"), Exchange: a.Exchange, Bindings: []string{"part.*"}, DeliveryLimit: 3,
		SingleActiveConsumer: true}
	layout := func(n int) broker.Layout {
		return broker.Layout{Base: base, Partitions: n, Header: "partition", Buckets: 8}
	}
	for _, q := range layout(2).Queues() {
		a.Queue(q.Name[len(a.QueuePrefix):])
	}
	defer func() { _ = ch.ExchangeDelete(layout(2).SplitExchange(), false, false) }()
	require.NoError(t, layout(1).Declare(ch))
	require.NoError(t, layout(2).Declare(ch))
	require.NoError(t, layout(2).Detach(ch))

	// This version declares the same, with frames.
	base.Frames = true
	require.NoError(t, broker.DeclareEventExchange(ch, a.Exchange))
	require.NoError(t, layout(1).Declare(ch))
	require.NoError(t, layout(2).Declare(ch))
	single := func(bucket int) {
		require.NoError(t, ch.Publish(a.Exchange, "part.done", false, false, amqp.Publishing{
			Headers: amqp.Table{"partition": strconv.Itoa(bucket)}, Body: []byte(`{}`)}))
	}
	frame := func(bucket int) {
		require.NoError(t, ch.Publish(broker.FramesExchange(a.Exchange), "", false, false, amqp.Publishing{
			Headers: amqp.Table{"partition": strconv.Itoa(bucket), broker.FrameHeader: int32(1)}, Body: []byte(`[{}]`)}))
	}
	depth := queueDepth(t, conn)
	want := func(name string, n int) {
		t.Helper()
		testenv.Eventually(t, 5*time.Second, func() error {
			if got := depth(name); got != n {
				return assertErr{name, got, n}
			}
			return nil
		})
	}
	for b := range 4 {
		single(b)
		frame(b)
	}
	single(0)
	single(1)
	want(base.Name, 4)                 // the four frames, not one single event
	want(layout(2).Queue(0).Name, 2)   // the frames of buckets 0 and 2
	want(layout(2).Queue(1).Name, 2)   // of 1 and 3
	time.Sleep(200 * time.Millisecond) // a single event routed late would show by now
	assert.Equal(t, 4, depth(base.Name))
	assert.Equal(t, 2, depth(layout(2).Queue(0).Name))
	assert.Zero(t, depth(unrouted), "the alternate exchange keeps nothing")

	// Detached, the single queue takes no frame.
	require.NoError(t, layout(1).Detach(ch))
	frame(5)
	want(layout(2).Queue(1).Name, 3)
	assert.Equal(t, 4, depth(base.Name))
}
