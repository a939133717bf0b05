package reactors

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
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
