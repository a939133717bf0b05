package projections_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
	"github.com/chatbotsaas/chatbotd/projections"
)

// oneByOne hides a projector's ApplySet: the runtime then calls Apply for each event.
type oneByOne struct{ projections.Projector }

// mixedHistory appends a log in which every set-applied event type comes in runs and
// between the events that end a run: accounts, chatbots with their knowledge, a
// subscription that starts, then stops, matching; conversations whose messages are
// posted, answered and failed.
func mixedHistory(t *testing.T, s *eventstore.Store) []events.Envelope {
	t.Helper()
	ctx := context.Background()
	history(t, s)
	org := uuid.New()
	must := func(stype string, id uuid.UUID, evs ...events.Event) {
		t.Helper()
		_, err := s.Append(ctx, eventstore.AppendRequest{StreamType: stype, StreamID: id, ExpectedVersion: eventstore.AnyVersion,
			OrganizationID: &org, Events: evs, Meta: system})
		require.NoError(t, err)
	}
	// Roles and tags that an array literal could misread, were they not quoted.
	must(events.StreamUser, uuid.New(), events.UserCreated{Name: "odd roles", Email: "odd@example.com", Roles: oddTexts, Status: "active"})
	hook, later := uuid.New(), uuid.New()
	must(events.StreamWebhook, hook, events.WebhookCreated{URL: "https://example.com/hook", Events: []string{"chatbot.*", "message.posted"}})
	var bots []uuid.UUID
	for i := range 6 {
		bot := uuid.New()
		bots = append(bots, bot)
		must(events.StreamChatbot, bot, events.ChatbotCreated{Name: fmt.Sprint("bot ", i), Description: "d",
			WelcomeMessage: "hi", FallbackMessage: "sorry", Responder: events.Responder{Type: "knowledge_base"}})
		if i%2 == 0 {
			must(events.StreamChatbot, bot, events.ChatbotUpdated{Changes: map[string]events.Change{"name": {Old: "x", New: fmt.Sprint("renamed ", i)}}},
				events.ChatbotPublished{})
		}
		if i == 3 {
			must(events.StreamWebhook, later, events.WebhookCreated{URL: "https://example.com/all", Events: []string{"#"}})
		}
	}
	must(events.StreamKnowledge, uuid.New(), events.KnowledgeEntryAdded{ChatbotID: bots[0].String(),
		Entry: events.KnowledgeEntry{ID: uuid.NewString(), Question: "q", Answer: "a", Tags: []string{"t"}}})
	must(events.StreamKnowledge, uuid.New(), events.KnowledgeEntryAdded{ChatbotID: bots[1].String(),
		Entry: events.KnowledgeEntry{ID: uuid.NewString(), Question: "q2", Answer: "a2", Tags: oddTexts}})
	for c := range 4 {
		conv, bot := uuid.New(), bots[c%len(bots)]
		must(events.StreamConversation, conv, events.ConversationStarted{ChatbotID: bot.String(), Metadata: map[string]any{"channel": "web"}})
		for m := range 7 {
			msg := uuid.New()
			evs := []events.Event{events.MessagePosted{ConversationID: conv.String(), ChatbotID: bot.String(), Content: fmt.Sprint("question ", m)}}
			switch m % 3 {
			case 1:
				evs = append(evs, events.MessageReplied{ConversationID: conv.String(), ChatbotID: bot.String(),
					ReplyID: uuid.NewString(), Content: "answer", Source: "fallback"})
			case 2:
				evs = append(evs, events.MessageFailed{ConversationID: conv.String(), ChatbotID: bot.String(),
					Code: events.FailureUndeliverable, Reason: "down"})
			}
			must(events.StreamMessage, msg, evs...)
		}
		if c == 2 {
			must(events.StreamWebhook, hook, events.WebhookDisabled{Reason: "too many failures"})
		}
	}
	return readableLog(t, s.Pool())
}

// oddTexts are strings that PostgreSQL's array literal syntax gives a meaning of their own.
var oddTexts = []string{"member", "", "NULL", "null", "a,b", "{x}", "{}", `q"uote`, `back\slash`, `\"`, " spaced ",
	"tab\there", "new\nline", "ünï©ødé"}

// Roles and tags written by ApplySet, in arrays of one row each, read back as they were
// given, however odd.
func TestApplySetKeepsTextArraysAsGiven(t *testing.T) {
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	s := eventstore.NewStore(d.Pool)
	org, user, bot := uuid.New(), uuid.New(), uuid.New()
	for _, r := range []struct {
		stype string
		id    uuid.UUID
		event events.Event
	}{
		{events.StreamUser, user, events.UserCreated{Name: "u", Email: "u@example.com", Roles: oddTexts, Status: "active"}},
		{events.StreamUser, uuid.New(), events.UserCreated{Name: "v", Email: "v@example.com", Roles: []string{}, Status: "active"}},
		{events.StreamKnowledge, uuid.New(), events.KnowledgeImported{ChatbotID: bot.String(), Entries: []events.KnowledgeEntry{
			{ID: uuid.NewString(), Question: "q1", Answer: "a1", Tags: oddTexts},
			{ID: uuid.NewString(), Question: "q2", Answer: "a2"}}}},
	} {
		_, err := s.Append(ctx, eventstore.AppendRequest{StreamType: r.stype, StreamID: r.id, ExpectedVersion: eventstore.AnyVersion,
			OrganizationID: &org, Events: []events.Event{r.event}, Meta: system})
		require.NoError(t, err)
	}
	all := readableLog(t, d.Pool)
	for _, p := range []projections.Projector{projections.NewAccounts(nil, nil, nil), projections.Chatbots{}} {
		_, err := projections.ApplyBatch(ctx, d.Pool, p, bound(p, all))
		require.NoError(t, err, p.Name())
	}
	var roles []string
	require.NoError(t, d.Pool.QueryRow(ctx, `SELECT roles FROM users WHERE id = $1`, user).Scan(&roles))
	assert.Equal(t, oddTexts, roles)
	var empty int
	require.NoError(t, d.Pool.QueryRow(ctx, `SELECT count(*) FROM users WHERE organization_id = $1 AND roles = '{}'`, org).Scan(&empty))
	assert.Equal(t, 1, empty, "no roles: an empty array")
	rows, err := d.Pool.Query(ctx, `SELECT tags FROM knowledge_entries WHERE chatbot_id = $1 ORDER BY question`, bot)
	require.NoError(t, err)
	tags, err := pgx.CollectRows(rows, pgx.RowTo[[]string])
	require.NoError(t, err)
	assert.Equal(t, [][]string{oddTexts, {}}, tags)
}

// deliveries renders webhook_deliveries without what each write makes up (its id, time).
func deliveries(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT concat_ws(' ', webhook_id, event_id, event_type, stream_id,
		stream_version, position, md5(payload), status) FROM webhook_deliveries ORDER BY 1`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}

// A projector's ApplySet leaves its tables as Apply, one event at a time, does: for the
// whole log in one batch, in batches of random size, and in a rebuild's replay.
func TestApplySetEqualsApplyOneByOne(t *testing.T) {
	ctx := context.Background()
	ref := testenv.MustDatabase(t)
	all := mixedHistory(t, eventstore.NewStore(ref.Pool))
	set := testenv.MustDatabase(t)
	copyAllEvents(t, ref.Pool, set.Pool)
	batches := testenv.MustDatabase(t)
	copyAllEvents(t, ref.Pool, batches.Pool)

	type tabled interface{ Tables() []string }
	webhooks := projections.Webhooks{}
	for _, p := range []projections.Projector{projections.NewAccounts(nil, nil, nil), projections.Audit{},
		projections.Conversations{}, projections.Chatbots{}, projections.Analytics{}, webhooks} {
		_, ok := p.(projections.SetApplier)
		require.True(t, ok, "%s applies sets", p.Name())
		all := bound(p, all)
		_, err := projections.ApplyBatch(ctx, ref.Pool, oneByOne{p}, all)
		require.NoError(t, err, p.Name())
		_, err = projections.ApplyBatch(ctx, set.Pool, p, all)
		require.NoError(t, err, p.Name())
		for rest := all; len(rest) > 0; {
			n := min(len(rest), 1+rand.IntN(12))
			_, err := projections.ApplyBatch(ctx, batches.Pool, p, rest[:n])
			require.NoError(t, err, p.Name())
			rest = rest[n:]
		}
		if tp, ok := p.(tabled); ok {
			want := checksums(t, ref.Pool, p.Name(), tp.Tables()...)
			assert.Equal(t, want, checksums(t, set.Pool, p.Name(), tp.Tables()...), "%s: one batch", p.Name())
			assert.Equal(t, want, checksums(t, batches.Pool, p.Name(), tp.Tables()...), "%s: random batches", p.Name())
		}
	}
	want := deliveries(t, ref.Pool)
	require.NotEmpty(t, want)
	assert.Equal(t, want, deliveries(t, set.Pool), "webhook deliveries: one batch")
	assert.Equal(t, want, deliveries(t, batches.Pool), "webhook deliveries: random batches")
	assert.Equal(t, checksums(t, ref.Pool, webhooks.Name(), "webhooks"), checksums(t, set.Pool, webhooks.Name(), "webhooks"))

	// A rebuild replays with ApplySet (and COPY where a projector loads with it) into
	// fresh tables; verifying it against the one-by-one tables compares every row.
	for _, p := range []projections.Rebuildable{projections.NewAccounts(nil, nil, nil), projections.Audit{},
		projections.Conversations{}, projections.Chatbots{}, projections.Analytics{}} {
		c, err := (&projections.Rebuild{Pool: ref.Pool, Projector: p, BatchSize: 7}).Verify(ctx, 0)
		require.NoError(t, err, p.Name())
		assert.True(t, c.Equal, "%s: %+v", p.Name(), c)
	}
}

// bound is what p's queue gets of envs.
func bound(p projections.Projector, envs []events.Envelope) []events.Envelope {
	match := events.TopicMatcher(p.Bindings())
	var out []events.Envelope
	for _, e := range envs {
		if match(e.Type) {
			out = append(out, e)
		}
	}
	return out
}

// recordingSet records what the runtime gives ApplySet, and counts Apply calls.
type recordingSet struct {
	projections.Conversations
	sets   [][]events.Envelope
	single int
}

func (r *recordingSet) Apply(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
	r.single++
	return r.Conversations.Apply(ctx, tx, e)
}

func (r *recordingSet) ApplySet(ctx context.Context, tx pgx.Tx, envs []events.Envelope) error {
	r.sets = append(r.sets, envs)
	return r.Conversations.ApplySet(ctx, tx, envs)
}

// The runtime gives a SetApplier the whole batch at once, in Apply's order: duplicates
// and applied versions left out, a gap filled from the store before the version after it.
func TestRuntimeGivesApplySetTheBatchInApplyOrder(t *testing.T) {
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	store := eventstore.NewStore(d.Pool)
	for range 2 {
		require.NoError(t, conversation(ctx, store, uuid.New(), 2))
	}
	all := readableLog(t, d.Pool)
	require.Len(t, all, 8) // per conversation: started, posted + replied, posted
	p := &recordingSet{}
	// The first conversation, its first message's reply without its post, and a duplicate.
	batch := []events.Envelope{all[0], all[2], all[0], all[3]}
	applied, err := projections.ApplyBatch(ctx, d.Pool, p, batch)
	require.NoError(t, err)
	want := []events.Envelope{all[0], all[1], all[2], all[3]}
	require.Len(t, p.sets, 1)
	assert.Equal(t, ids(want), ids(p.sets[0]))
	assert.Equal(t, ids(want), ids(applied))
	assert.Zero(t, p.single, "the runtime calls no Apply of its own")

	_, err = projections.ApplyBatch(ctx, d.Pool, p, all)
	require.NoError(t, err)
	require.Len(t, p.sets, 2)
	assert.Equal(t, ids(all[4:]), ids(p.sets[1]), "what was applied before is left out")
}

func ids(envs []events.Envelope) []string {
	out := make([]string, len(envs))
	for i, e := range envs {
		out[i] = fmt.Sprintf("%s v%d", e.StreamID, e.StreamVersion)
	}
	return out
}
