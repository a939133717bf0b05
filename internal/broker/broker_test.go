package broker_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/broker"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// A queue with a single active consumer delivers to one consumer at a time, even with
// two processes consuming it; when that consumer goes away, what it left unacknowledged
// and everything after goes to the one standing by, in order.
func TestSingleActiveConsumerFailsOver(t *testing.T) {
	ctx := context.Background()
	a := testenv.MustAMQP(t)
	q := broker.QueueSpec{Name: a.Queue("sac"), Exchange: a.Exchange, Bindings: []string{"#"}, DeliveryLimit: 5, SingleActiveConsumer: true}
	conn := broker.Dial(a.URL, testenv.Logger(t))
	defer conn.Close()
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	defer ch.Close()
	require.NoError(t, broker.DeclareEventExchange(ch, a.Exchange))
	require.NoError(t, broker.DeclareQueue(ch, q))

	consume := func() (*amqp.Channel, <-chan amqp.Delivery) {
		c, err := conn.Channel(ctx)
		require.NoError(t, err)
		require.NoError(t, c.Qos(100, 0, false))
		d, err := c.Consume(q.Name, "", false, false, false, false, nil)
		require.NoError(t, err)
		return c, d
	}
	first, firstD := consume()
	second, secondD := consume()
	defer second.Close()
	for i := range 10 {
		require.NoError(t, ch.PublishWithContext(ctx, a.Exchange, "x", false, false, amqp.Publishing{Body: []byte(fmt.Sprint(i))}))
	}
	for i := range 10 {
		select {
		case d := <-firstD:
			assert.Equal(t, fmt.Sprint(i), string(d.Body))
		case <-time.After(5 * time.Second):
			t.Fatalf("the active consumer got %d of 10", i)
		}
	}
	select {
	case d := <-secondD:
		t.Fatalf("the standby got %q while the first was active", d.Body)
	case <-time.After(300 * time.Millisecond):
	}
	// The first goes away with everything unacknowledged: the standby takes over, in order.
	first.Close()
	for i := range 10 {
		select {
		case d := <-secondD:
			assert.Equal(t, fmt.Sprint(i), string(d.Body))
			require.NoError(t, d.Ack(false))
		case <-time.After(5 * time.Second):
			t.Fatalf("the standby got %d of 10 after the failover", i)
		}
	}

	// The same queue declared without the argument is refused with a clear message.
	other, err := conn.Channel(ctx)
	require.NoError(t, err)
	q.SingleActiveConsumer = false
	err = broker.DeclareQueue(other, q)
	require.ErrorContains(t, err, "exists with other arguments")
}

// With a list of nodes, losing the node in use moves the connection to another, and a
// node that comes back is used again when the others are lost.
func TestConnCarriesOnThroughAnotherNode(t *testing.T) {
	nodes := []*testenv.Proxy{testenv.MustProxy(t, "127.0.0.1:5672"), testenv.MustProxy(t, "127.0.0.1:5672"),
		testenv.MustProxy(t, "127.0.0.1:5672")}
	var urls []string
	for _, n := range nodes {
		urls = append(urls, strings.Replace(testenv.AMQPURL(), "127.0.0.1:5672", n.Addr(), 1))
	}
	c := broker.Dial(strings.Join(urls, " , "), testenv.Logger(t))
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	inUse := func() *testenv.Proxy {
		t.Helper()
		ch, err := c.Channel(ctx)
		require.NoError(t, err)
		defer ch.Close()
		for _, n := range nodes {
			if n.Addr() == c.Node() {
				return n
			}
		}
		t.Fatalf("connected to %q, not one of the nodes", c.Node())
		return nil
	}
	first := inUse()
	first.Cut()
	second := inUse()
	assert.NotEqual(t, first.Addr(), second.Addr(), "moved to another node")
	first.Restore()
	second.Cut()
	third := inUse()
	assert.NotEqual(t, second.Addr(), third.Addr())
	for _, n := range nodes {
		n.Cut()
	}
	short, cancelShort := context.WithTimeout(context.Background(), time.Second)
	defer cancelShort()
	_, err := c.Channel(short)
	require.ErrorIs(t, err, broker.ErrUnavailable, "every node down: unavailable, naming no credentials")
	assert.NotContains(t, err.Error(), "guest")
	nodes[1].Restore()
	assert.Equal(t, nodes[1].Addr(), inUse().Addr(), "the one node back is found")
}
