package projections_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
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
	ctx, d, a, conn := runnerEnv(t, projections.ChatbotsName)

	runNotifying(ctx, t, d, a, conn, projections.Chatbots{})

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
		OrganizationID: &org, Meta: system, Events: []events.Event{botCreated}})
	require.NoError(t, err)
	wctx, stop := context.WithTimeout(ctx, 15*time.Second)
	defer stop()
	reached, err := waits.WaitApplied(wctx, d.Pool, readmodel.ChatbotsProjection, bot, res.Version)
	require.NoError(t, err)
	assert.True(t, reached, "no notification woke the wait within 15 s")
	assert.True(t, waits.Live(), "woken by a notification, not by the listener's loss")
}

// A batch says in its notification that it wrote webhook deliveries only when it did:
// the deliverer wakes on that name (readmodel.DeliveriesWork), and the webhooks
// projector applies every event, most of which write none.
func TestRunnerNamesTheWorkABatchWrote(t *testing.T) {
	ctx, d, a, conn := runnerEnv(t, projections.WebhooksName)

	listener, err := pgx.Connect(ctx, d.URL)
	require.NoError(t, err)
	defer listener.Close(context.WithoutCancel(ctx))
	_, err = listener.Exec(ctx, `LISTEN `+readmodel.AppliedChannel)
	require.NoError(t, err)
	// next is the names of the next notification, within 15 s.
	next := func() []string {
		wctx, stop := context.WithTimeout(ctx, 15*time.Second)
		defer stop()
		n, err := listener.WaitForNotification(wctx)
		require.NoError(t, err, "no notification within 15 s")
		return strings.Split(n.Payload, ",")
	}

	runNotifying(ctx, t, d, a, conn, projections.Webhooks{})

	store := eventstore.NewStore(d.Pool)
	org := uuid.New()
	appendOne := func(typ string, e events.Event) {
		t.Helper()
		_, err := store.Append(ctx, eventstore.AppendRequest{StreamType: typ, StreamID: uuid.New(),
			OrganizationID: &org, Meta: system, Events: []events.Event{e}})
		require.NoError(t, err)
	}
	bot := botCreated

	appendOne(events.StreamChatbot, bot) // the organization has no subscription yet
	names := next()
	assert.Contains(t, names, readmodel.WebhooksProjection, "the consistency waits are told")
	assert.NotContains(t, names, readmodel.DeliveriesWork, "a batch that wrote no delivery wakes no deliverer")

	// The subscription first, alone: its batch's notification comes after its commit, so
	// once a notification finds the subscription in the table, no notification of that
	// batch is left.
	appendOne(events.StreamWebhook, events.WebhookCreated{URL: "https://example.com/hook", Events: []string{"chatbot.*"}})
	for subscribed := 0; subscribed == 0; {
		assert.NotContains(t, next(), readmodel.DeliveriesWork, "the subscription's batch wrote no delivery")
		require.NoError(t, d.Pool.QueryRow(ctx, `SELECT count(*) FROM webhooks`).Scan(&subscribed))
	}
	// Then the one batch that writes a delivery: the next notification is its own, and it
	// names the projection and the work together.
	appendOne(events.StreamChatbot, bot)
	names = next()
	assert.ElementsMatch(t, []string{readmodel.WebhooksProjection, readmodel.DeliveriesWork}, names,
		"a delivery was written: its batch's one notification names the projection and the deliverer's work")
	var deliveries int
	require.NoError(t, d.Pool.QueryRow(ctx, `SELECT count(*) FROM webhook_deliveries`).Scan(&deliveries))
	assert.Equal(t, 1, deliveries)
}

// runnerEnv is a database, the test's AMQP set-up with queue declared for cleanup, a broker
// connection, and a context that ends with the test.
func runnerEnv(t *testing.T, queue string) (context.Context, testenv.Database, *testenv.AMQP, *broker.Conn) {
	t.Helper()
	d := testenv.MustDatabase(t)
	a := testenv.MustAMQP(t)
	a.Queue(queue)
	conn := broker.Dial(a.URL, testenv.Logger(t))
	t.Cleanup(func() { conn.Close() })
	// Registered last, so ended first: what runs on ctx stops before the rest goes.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx, d, a, conn
}

// botCreated is a chatbot's creation, as the tests here append it.
var botCreated = events.ChatbotCreated{Name: "Bot", Description: "d", WelcomeMessage: "hi", FallbackMessage: "sorry",
	Responder: events.Responder{Type: "knowledge_base"}}

// runNotifying runs p on the runtime with the applied notifier, and the relay, until ctx
// ends; it returns the notifier once p's queue has its consumer.
func runNotifying(ctx context.Context, t *testing.T, d testenv.Database, a *testenv.AMQP, conn *broker.Conn,
	p projections.Projector) *projections.AppliedNotifier {
	t.Helper()
	notifier := projections.NewAppliedNotifier(d.Pool, testenv.Logger(t))
	go notifier.Run(ctx)
	runner, err := projections.NewRunner(d.Pool, conn, p, projections.Config{
		Exchange: a.Exchange, QueuePrefix: a.QueuePrefix, Logger: testenv.Logger(t), Applied: notifier})
	require.NoError(t, err)
	relay, err := eventstore.NewRelay(d.Pool, conn, eventstore.RelayConfig{Exchange: a.Exchange, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	go runner.Run(ctx)
	go relay.Run(ctx)
	a.WaitConsumer(runner.Queue().Name)
	return notifier
}

// A runner tells the waits of its own process what each batch applied, as soon as the
// batch commits (AppliedNotifier.SetLocal): each member's streams at the version the
// batch left them.
func TestRunnerTellsItsProcessTheVersionsEachBatchReached(t *testing.T) {
	ctx, d, a, conn := runnerEnv(t, projections.ChatbotsName)

	type reached struct {
		projection string
		versions   map[uuid.UUID]int
	}
	told := make(chan reached, 16)
	notifier := runNotifying(ctx, t, d, a, conn, projections.Chatbots{})
	notifier.SetLocal(func(projection string, versions map[uuid.UUID]int) { told <- reached{projection, versions} })

	org, bot := uuid.New(), uuid.New()
	store := eventstore.NewStore(d.Pool)
	_, err := store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamChatbot, StreamID: bot,
		OrganizationID: &org, Meta: system, Events: []events.Event{botCreated,
			events.ChatbotUpdated{Changes: map[string]events.Change{"name": {Old: "Bot", New: "Bot 2"}}}}})
	require.NoError(t, err)
	// Both events are most often one batch; where the broker splits them, two.
	deadline := time.After(15 * time.Second)
	for at := 0; at < 2; {
		select {
		case got := <-told:
			assert.Equal(t, readmodel.ChatbotsProjection, got.projection)
			require.Len(t, got.versions, 1)
			require.Greater(t, got.versions[bot], at, "a version the batch before reached already")
			at = got.versions[bot]
		case <-deadline:
			t.Fatal("the runner did not tell its process version 2 within 15 s")
		}
	}
	var name string
	require.NoError(t, d.Pool.QueryRow(ctx, `SELECT name FROM chatbots WHERE id = $1`, bot).Scan(&name))
	assert.Equal(t, "Bot 2", name, "told once committed")
}
