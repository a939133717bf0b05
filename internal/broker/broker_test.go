package broker_test

import (
	"context"
	"fmt"
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
