package projections

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/broker"
)

// TestDecodeAheadDecodesWhileNoBatchIsTaken: deliveries are decoded before the consumer
// asks for them (it is applying the batch before), in the order they came, with fences
// frames and undecodable bodies told apart; closing deliveries closes what it hands on,
// and stop ends it even while nobody reads.
func TestDecodeAheadDecodesWhileNoBatchIsTaken(t *testing.T) {
	body := func(v int) []byte {
		b, err := json.Marshal(events.Envelope{ID: uuid.New(), Type: "user.created", SchemaVersion: 1, StreamType: events.StreamUser,
			StreamID: uuid.New(), StreamVersion: v, Position: int64(v), OccurredAt: time.Now().UTC(), Data: json.RawMessage(`{}`)})
		require.NoError(t, err)
		return b
	}
	deliveries := make(chan amqp.Delivery, 8)
	deliveries <- amqp.Delivery{Body: body(1)}
	deliveries <- amqp.Delivery{Body: []byte(`{"id":`)}
	deliveries <- amqp.Delivery{Headers: amqp.Table{broker.FenceHeader: true}}
	deliveries <- amqp.Delivery{Body: body(2)}
	frame := events.CloseFrame(events.AppendFrame(events.AppendFrame(nil, body(3)), body(4)))
	deliveries <- amqp.Delivery{Headers: amqp.Table{broker.FrameHeader: int32(2)}, Body: frame}
	deliveries <- amqp.Delivery{Headers: amqp.Table{broker.FrameHeader: int32(2)}, Body: []byte(`[` + string(body(5)) + `,{}]`)}
	out := make(chan received, 8)
	go decodeAhead(deliveries, out, make(chan struct{}))
	// Nobody reads yet: all six are decoded and waiting.
	require.Eventually(t, func() bool { return len(out) == 6 }, 5*time.Second, time.Millisecond)
	first, bad, fence, second, framed, badFrame := <-out, <-out, <-out, <-out, <-out, <-out
	require.NoError(t, first.err)
	require.Len(t, first.envs, 1)
	require.Equal(t, 1, first.envs[0].StreamVersion)
	require.Error(t, bad.err)
	require.Equal(t, 1, bad.size())
	require.True(t, fence.fence)
	require.NoError(t, fence.err)
	require.Equal(t, 2, second.envs[0].StreamVersion)
	require.NoError(t, framed.err)
	require.Equal(t, 2, framed.size(), "a frame counts for its events in a batch")
	require.Equal(t, 3, framed.envs[0].StreamVersion)
	require.Equal(t, 4, framed.envs[1].StreamVersion)
	require.Error(t, badFrame.err, "a frame with an event that does not decode is rejected whole")
	close(deliveries)
	_, open := <-out
	require.False(t, open, "closing deliveries closes what decodeAhead hands on")

	// stop ends it while it waits to hand on a delivery nobody takes.
	deliveries = make(chan amqp.Delivery, 1)
	deliveries <- amqp.Delivery{Body: body(1)}
	out = make(chan received) // unbuffered, never read
	stop, ended := make(chan struct{}), make(chan struct{})
	go func() { decodeAhead(deliveries, out, stop); close(ended) }()
	close(stop)
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("decodeAhead did not end at stop")
	}
}
