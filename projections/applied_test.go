package projections_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/broker"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
	"github.com/chatbotsaas/chatbotd/projections"
)

// A runner that commits a batch tells the reads waiting for its projection, through
// PostgreSQL, in whatever process they wait: the wait here looks again only when told
// (its safety poll is an hour), and ends once the projector has applied the event.
func TestRunnerWakesTheConsistencyWaitsOfItsProjection(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := testenv.MustDatabase(t)
	a := testenv.MustAMQP(t)
	a.Queue(projections.ChatbotsName)
	conn := broker.Dial(a.URL, testenv.Logger(t))
	defer conn.Close()

	notifier := projections.NewAppliedNotifier(d.Pool, testenv.Logger(t))
	go notifier.Run(ctx)
	runner, err := projections.NewRunner(d.Pool, conn, projections.Chatbots{}, projections.Config{
		Exchange: a.Exchange, QueuePrefix: a.QueuePrefix, Logger: testenv.Logger(t), Applied: notifier})
	require.NoError(t, err)
	relay, err := eventstore.NewRelay(d.Pool, conn, eventstore.RelayConfig{Exchange: a.Exchange, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	go runner.Run(ctx)
	go relay.Run(ctx)
	a.WaitConsumer(runner.Queue().Name)

	waits := readmodel.NewApplied(d.Pool.Config().ConnConfig, testenv.Logger(t))
	waits.SafetyPoll = time.Hour
	go waits.Listen(ctx)
	testenv.Eventually(t, 5*time.Second, func() error {
		if !waits.Live() {
			return errors.New("not listening yet")
		}
		return nil
	})

	org, bot := uuid.New(), uuid.New()
	res, err := eventstore.NewStore(d.Pool).Append(ctx, eventstore.AppendRequest{StreamType: events.StreamChatbot, StreamID: bot,
		OrganizationID: &org, Meta: system, Events: []events.Event{events.ChatbotCreated{Name: "Bot", Description: "d",
			WelcomeMessage: "hi", FallbackMessage: "sorry", Responder: events.Responder{Type: "knowledge_base"}}}})
	require.NoError(t, err)
	wctx, stop := context.WithTimeout(ctx, 15*time.Second)
	defer stop()
	reached, err := waits.WaitApplied(wctx, d.Pool, readmodel.ChatbotsProjection, bot, res.Version)
	require.NoError(t, err)
	assert.True(t, reached, "no notification woke the wait within 15 s")
	assert.True(t, waits.Live(), "woken by a notification, not by the listener's loss")
}
