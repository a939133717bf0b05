package broker_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/broker"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// The first store to claim a queue prefix keeps it: it may claim again (a restart, a
// second process of the same deployment), another store is refused with what to set.
func TestClaimQueuesKeepsThePrefixToOneStore(t *testing.T) {
	mq := testenv.MustAMQP(t)
	conn, err := amqp.Dial(mq.URL)
	require.NoError(t, err)
	defer conn.Close()
	claim := func(store string) error {
		ch, err := conn.Channel()
		require.NoError(t, err)
		defer ch.Close()
		return broker.ClaimQueues(context.Background(), ch, mq.QueuePrefix, store)
	}
	mine, theirs := uuid.NewString(), uuid.NewString()
	require.NoError(t, claim(mine))
	require.NoError(t, claim(mine))
	err = claim(theirs)
	require.ErrorIs(t, err, broker.ErrClaimed)
	assert.Contains(t, err.Error(), mine)
	assert.Contains(t, err.Error(), "AMQP_QUEUE_PREFIX")
	require.NoError(t, claim(mine), "the refused claim left the first one in place")
}
