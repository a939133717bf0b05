package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

type overviewJSON struct {
	From          string         `json:"from"`
	To            string         `json:"to"`
	ChatbotID     *string        `json:"chatbot_id"`
	Conversations int            `json:"conversations"`
	Messages      int            `json:"messages"`
	Replies       int            `json:"replies"`
	Failed        int            `json:"failed"`
	FailedByCode  map[string]int `json:"failed_by_code"`
	AvgReplyMS    *float64       `json:"avg_reply_ms"`
	P95ReplyMS    *int64         `json:"p95_reply_ms"`
	PerDay        []dayJSON      `json:"per_day"`
}

type dayJSON struct {
	Date          string `json:"date"`
	Conversations int    `json:"conversations"`
	Messages      int    `json:"messages"`
	Replies       int    `json:"replies"`
	Failed        int    `json:"failed"`
}

// history writes events into the log as an older build (or an import) would have, at
// chosen times, so that reply times are known exactly.
type history struct {
	t   *testing.T
	app *app
}

func (h history) insert(org uuid.UUID, stream uuid.UUID, version int, eventType string, schemaVersion int, at string, data any) {
	h.t.Helper()
	b, err := json.Marshal(data)
	require.NoError(h.t, err)
	occurred, err := time.Parse(time.RFC3339Nano, at)
	require.NoError(h.t, err)
	_, err = h.app.db.Pool.Exec(context.Background(), `INSERT INTO events (id, stream_type, stream_id, stream_version, type,
		schema_version, organization_id, actor_type, data, occurred_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'system', $8, $9)`,
		uuid.New(), events.StreamTypeOf(eventType), stream, version, eventType, schemaVersion, org, b, occurred)
	require.NoError(h.t, err)
}

func (h history) conversation(org uuid.UUID, bot, at string) string {
	id := uuid.New()
	h.insert(org, id, 1, "conversation.started", 1, at, events.ConversationStarted{ChatbotID: bot, Metadata: map[string]any{}})
	return id.String()
}

// message posts a message at posted and answers it at answered: a reply, or with a
// failure when failure is set (v1 when code is empty: the old schema, upcast on reading).
func (h history) message(org uuid.UUID, bot, conv, posted, answered string, failure ...string) {
	id := uuid.New()
	h.insert(org, id, 1, "message.posted", 1, posted, events.MessagePosted{ConversationID: conv, ChatbotID: bot, Content: "hi"})
	switch {
	case len(failure) == 0:
		h.insert(org, id, 2, "message.replied", 1, answered, events.MessageReplied{ConversationID: conv, ChatbotID: bot,
			ReplyID: uuid.NewString(), Content: "hello", Source: "fallback"})
	case failure[0] == "":
		h.insert(org, id, 2, "message.failed", 1, answered, map[string]string{"conversation_id": conv, "chatbot_id": bot,
			"reason": failure[1]})
	default:
		h.insert(org, id, 2, "message.failed", 2, answered, events.MessageFailed{ConversationID: conv, ChatbotID: bot,
			Code: failure[0], Reason: failure[1]})
	}
}

func ptr[T any](v T) *T { return &v }

// TestAnalyticsOverviewMatchesAHandComputedScenario checks every figure against one
// worked by hand, then that a duplicate delivery and a rebuild change none of them.
func TestAnalyticsOverviewMatchesAHandComputedScenario(t *testing.T) {
	a := startApp(t)
	owner, token := a.register("Counted", "Cora", "cora@counted.example")
	other, _ := a.register("Elsewhere", "Eli", "eli@elsewhere.example")
	newBot := func(name string) string {
		var bot struct{ ID string }
		made := a.expect(req{method: "POST", path: "/api/v1/chatbots", token: token, body: map[string]any{"name": name}}, 201)
		made.data(t, &bot)
		// The overview's chatbot filter looks the chatbot up in the chatbots read model,
		// another projector than analytics: read it once with the command's token.
		a.expect(req{method: "GET", path: "/api/v1/chatbots/" + bot.ID, token: token, headers: consistent(made)}, 200)
		return bot.ID
	}
	botA, botB := newBot("A"), newBot("B")
	org, otherOrg := uuid.MustParse(owner.OrganizationID), uuid.MustParse(other.OrganizationID)
	h := history{t: t, app: a}

	// Day 1, 2026-03-01. Chatbot A: a conversation, three messages answered in 200, 400
	// and 600 ms; the last is answered after midnight, so its reply counts on day 2.
	c1 := h.conversation(org, botA, "2026-03-01T10:00:00Z")
	h.message(org, botA, c1, "2026-03-01T10:00:00Z", "2026-03-01T10:00:00.2Z")
	h.message(org, botA, c1, "2026-03-01T10:01:00Z", "2026-03-01T10:01:00.4Z")
	h.message(org, botA, c1, "2026-03-01T23:59:59.9Z", "2026-03-02T00:00:00.5Z")
	// Day 2. Chatbot A: a conversation with two failed messages, one stored with schema
	// v1 of message.failed (no code: upcast to chatbot_deleted). Chatbot B: a
	// conversation, a message answered in 1000 ms.
	c2 := h.conversation(org, botA, "2026-03-02T08:00:00Z")
	h.message(org, botA, c2, "2026-03-02T08:00:00Z", "2026-03-02T08:00:05Z", events.FailureWebhookError, "webhook: status 500")
	h.message(org, botA, c2, "2026-03-02T08:01:00Z", "2026-03-02T08:01:01Z", "", "the chatbot was deleted")
	c3 := h.conversation(org, botB, "2026-03-02T09:00:00Z")
	h.message(org, botB, c3, "2026-03-02T09:00:00Z", "2026-03-02T09:00:01Z")
	// Day 3. Chatbot B: a message answered in 100 ms.
	h.message(org, botB, c3, "2026-03-03T12:00:00Z", "2026-03-03T12:00:00.1Z")
	// Outside the range (the day before), and another organization's: never counted.
	h.message(org, botB, c3, "2026-02-28T12:00:00Z", "2026-02-28T12:00:05Z")
	oc := h.conversation(otherOrg, uuid.NewString(), "2026-03-01T10:00:00Z")
	h.message(otherOrg, uuid.NewString(), oc, "2026-03-01T10:00:00Z", "2026-03-01T10:00:09Z")

	// By hand. Replies in range: 200, 400, 600, 1000, 100 ms: avg 2300/5 = 460; p95 (the
	// smallest value with at least 95% at or below it) 1000.
	all := overviewJSON{From: "2026-03-01", To: "2026-03-03", Conversations: 3, Messages: 7, Replies: 5, Failed: 2,
		FailedByCode: map[string]int{"webhook_error": 1, "chatbot_deleted": 1}, AvgReplyMS: ptr(460.0), P95ReplyMS: ptr[int64](1000),
		PerDay: []dayJSON{{"2026-03-01", 1, 3, 2, 0}, {"2026-03-02", 2, 3, 2, 2}, {"2026-03-03", 0, 1, 1, 0}}}
	// Chatbot A: 200, 400, 600 ms.
	onlyA := overviewJSON{From: "2026-03-01", To: "2026-03-03", ChatbotID: &botA, Conversations: 2, Messages: 5, Replies: 3, Failed: 2,
		FailedByCode: map[string]int{"webhook_error": 1, "chatbot_deleted": 1}, AvgReplyMS: ptr(400.0), P95ReplyMS: ptr[int64](600),
		PerDay: []dayJSON{{"2026-03-01", 1, 3, 2, 0}, {"2026-03-02", 1, 2, 1, 2}, {"2026-03-03", 0, 0, 0, 0}}}
	// Chatbot B, day 2 only: 1000 ms.
	bDay2 := overviewJSON{From: "2026-03-02", To: "2026-03-02", ChatbotID: &botB, Conversations: 1, Messages: 1, Replies: 1,
		FailedByCode: map[string]int{}, AvgReplyMS: ptr(1000.0), P95ReplyMS: ptr[int64](1000),
		PerDay: []dayJSON{{"2026-03-02", 1, 1, 1, 0}}}

	overview := func(query string) overviewJSON {
		var o overviewJSON
		a.expect(req{method: "GET", path: "/api/v1/analytics/overview?" + query, token: token}, 200).data(t, &o)
		return o
	}
	check := func(when string) {
		t.Helper()
		testenv.Eventually(t, 20*time.Second, func() error {
			if got := overview("from=2026-03-01&to=2026-03-03"); !assert.ObjectsAreEqual(all, got) {
				time.Sleep(200 * time.Millisecond) // within the API's rate limit
				b, _ := json.Marshal(got)
				return fmt.Errorf("%s: got %s", when, b)
			}
			return nil
		})
		assert.Equal(t, onlyA, overview("from=2026-03-01&to=2026-03-03T23:00:00Z&chatbot_id="+botA), when)
		assert.Equal(t, bDay2, overview("from=2026-03-02&to=2026-03-02&chatbot_id="+botB), when)
	}
	check("projected")

	// The upcast v1 failure reads with its code on the messages' side too (another
	// projector, with a queue of its own: it may not have caught up with analytics yet).
	var code *string
	testenv.Eventually(t, 10*time.Second, func() error {
		err := a.db.Pool.QueryRow(context.Background(), `SELECT failure_code FROM messages m
			JOIN events e ON e.stream_id = m.id AND e.type = 'message.failed' AND e.schema_version = 1`).Scan(&code)
		if err == nil && code == nil {
			err = errors.New("the failure is not projected yet")
		}
		return err
	})
	require.NotNil(t, code)
	assert.Equal(t, events.FailureChatbotDeleted, *code)

	// Duplicates, straight to the analytics queue: nothing changes.
	hist, _, err := eventstore.ReadHistory(context.Background(), a.db.Pool, eventstore.HistoryFilter{Organization: &org,
		TypePatterns: []string{"conversation.*", "message.*"}}, eventstore.Checkpoint{}, 1000)
	require.NoError(t, err)
	require.Len(t, hist, 3+8*2)
	a.redeliver("analytics", hist)
	// A marker after the duplicates: once it is counted, they have been handled.
	h.message(org, botB, c3, "2026-03-03T13:00:00Z", "2026-03-03T13:00:00.1Z")
	all.Messages, all.Replies, all.AvgReplyMS = 8, 6, ptr(2400.0/6)
	all.PerDay[2] = dayJSON{"2026-03-03", 0, 2, 2, 0}
	check("after duplicates")

	// A rebuild from the log gives the same figures.
	_, stderr, err := a.run("projections", "rebuild", "analytics")
	require.NoError(t, err, stderr)
	check("rebuilt")

	// The default range is the last 30 days, every day present.
	def := overview("")
	assert.Len(t, def.PerDay, 30)
	assert.Equal(t, time.Now().UTC().Format("2006-01-02"), def.To)
	assert.Nil(t, def.AvgReplyMS)
	assert.Nil(t, def.P95ReplyMS)

	// Bad input.
	a.expectError(req{method: "GET", path: "/api/v1/analytics/overview?from=2026-03-05&to=2026-03-01", token: token}, 422, "VALIDATION_ERROR")
	a.expectError(req{method: "GET", path: "/api/v1/analytics/overview?from=2024-01-01&to=2026-03-01", token: token}, 422, "VALIDATION_ERROR")
	a.expectError(req{method: "GET", path: "/api/v1/analytics/overview?from=yesterday", token: token}, 422, "VALIDATION_ERROR")
	a.expectError(req{method: "GET", path: "/api/v1/analytics/overview?chatbot_id=nope", token: token}, 422, "VALIDATION_ERROR")
	a.expectError(req{method: "GET", path: "/api/v1/analytics/overview?chatbot_id=" + uuid.NewString(), token: token}, 404, "NOT_FOUND")
}
