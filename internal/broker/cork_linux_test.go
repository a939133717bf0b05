package broker_test

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/broker"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// A publish made while the connection is corked stays in this process's socket until the
// last Cork ends, and then arrives; before any connection, Cork does nothing.
func TestCorkHoldsPublishesBackUntilTheLastUncork(t *testing.T) {
	ctx := context.Background()
	a := testenv.MustAMQP(t)
	conn := broker.Dial(a.URL, testenv.Logger(t))
	defer conn.Close()
	conn.Cork()() // not connected yet: nothing to cork, nothing breaks
	corked, err := broker.Corked(conn)
	require.NoError(t, err)
	assert.False(t, corked)

	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	defer ch.Close()
	q := a.Queue("corked")
	_, err = ch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-queue-type": "quorum"})
	require.NoError(t, err)
	// Another connection looks at the queue, so that its reads are not held back.
	other, look := a.MustEventChannel(t)
	defer other.Close()
	count := func() int {
		got, err := look.QueueDeclarePassive(q, true, false, false, false, amqp.Table{"x-queue-type": "quorum"})
		require.NoError(t, err)
		return got.Messages
	}

	outer := conn.Cork()
	inner := conn.Cork()
	require.NoError(t, ch.PublishWithContext(ctx, "", q, true, false, amqp.Publishing{Body: []byte("held")}))
	time.Sleep(50 * time.Millisecond) // the kernel's own ceiling is 200 ms
	assert.Equal(t, 0, count(), "the publish left while corked")
	inner()
	corked, err = broker.Corked(conn)
	require.NoError(t, err)
	assert.True(t, corked, "an inner uncork ended the outer cork")
	outer()
	corked, err = broker.Corked(conn)
	require.NoError(t, err)
	assert.False(t, corked)
	require.Eventually(t, func() bool { return count() == 1 }, 5*time.Second, 10*time.Millisecond,
		"the publish did not arrive after the uncork")
}
