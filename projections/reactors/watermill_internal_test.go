package reactors

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/broker"
)

// A handler failing because the database is down is tried again until it succeeds or
// the consumer stops; any other failure is returned at once (the message is nacked).
func TestHoldWhileUnavailable(t *testing.T) {
	c := Consumer{Logger: slog.New(slog.DiscardHandler)}
	calls := 0
	flaky := c.holdWhileUnavailable(func(*message.Message) ([]*message.Message, error) {
		calls++
		if calls < 3 {
			return nil, io.ErrUnexpectedEOF // a connection cut mid-conversation
		}
		return nil, nil
	})
	msg := message.NewMessage("1", nil)
	msg.SetContext(context.Background())
	_, err := flaky(msg)
	assert.NoError(t, err)
	assert.Equal(t, 3, calls)

	broken := errors.New("constraint violated")
	calls = 0
	_, err = c.holdWhileUnavailable(func(*message.Message) ([]*message.Message, error) { calls++; return nil, broken })(msg)
	assert.ErrorIs(t, err, broken)
	assert.Equal(t, 1, calls)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	msg.SetContext(ctx)
	_, err = c.holdWhileUnavailable(func(*message.Message) ([]*message.Message, error) { return nil, io.ErrUnexpectedEOF })(msg)
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF, "a stopping consumer gives the message back")
}

// A failure on a message's last delivery (the queue's delivery limit then dead-letters
// it) is told to DeadLettered, once; earlier failures, successes and an unavailable
// database are not.
func TestLastTryTellsDeadLettered(t *testing.T) {
	var told []string
	c := Consumer{Queue: broker.QueueSpec{DeliveryLimit: 3},
		DeadLettered: func(_ context.Context, e events.Envelope, cause error) {
			told = append(told, e.Type+": "+cause.Error())
		}}
	body := `{"id":"` + uuid.NewString() + `","type":"message.posted","schema_version":1,"stream_type":"message","stream_id":"` +
		uuid.NewString() + `","stream_version":1,"position":1,"occurred_at":"2026-12-05T10:00:00Z","data":{}}`
	fails := c.lastTry(func(*message.Message) ([]*message.Message, error) { return nil, errors.New("webhook down") })
	down := c.lastTry(func(*message.Message) ([]*message.Message, error) { return nil, io.ErrUnexpectedEOF })
	works := c.lastTry(func(*message.Message) ([]*message.Message, error) { return nil, nil })
	delivery := func(count string) *message.Message {
		m := message.NewMessage("1", []byte(body))
		m.SetContext(context.Background())
		if count != "" {
			m.Metadata.Set(deliveryCountKey, count)
		}
		return m
	}
	for _, count := range []string{"", "1", "2"} {
		_, err := fails(delivery(count))
		assert.Error(t, err)
	}
	assert.Empty(t, told, "not the last delivery yet")
	_, _ = works(delivery("3"))
	_, _ = down(delivery("3"))
	assert.Empty(t, told, "a success, or a database that is down, is no dead letter")
	_, err := fails(delivery("3"))
	assert.Error(t, err, "still nacked, so that the queue dead-letters it")
	assert.Equal(t, []string{"message.posted: webhook down"}, told)
}
