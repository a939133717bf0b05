package projections

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
)

// AnalyticsName is the analytics projector's name.
const AnalyticsName = readmodel.AnalyticsProjection

// Analytics counts, per organization, chatbot and UTC day: conversations started, user
// messages posted, replies, failures (by code), and each reply's time from the message's
// post to its answer. The runtime applies each stream version exactly once, so the
// counters are right under duplicate delivery; a message's reply comes after its post
// (both are its stream's), so the reply time is always computable.
type Analytics struct{}

func (Analytics) Name() string { return AnalyticsName }

func (Analytics) Bindings() []string {
	return []string{"conversation.started", "message.*"}
}

// Tables are the tables a rebuild replaces.
func (Analytics) Tables() []string {
	return []string{"analytics_daily", "analytics_failures", "analytics_replies"}
}

// Apply counts one event.
func (Analytics) Apply(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
	ev, err := e.Decode()
	if err != nil {
		return err
	}
	day := e.OccurredAt.UTC().Format("2006-01-02")
	count := func(chatbot, column string, replyMS int64) error {
		bot, err := uuid.Parse(chatbot)
		if err != nil {
			return fmt.Errorf("%s: chatbot_id: %w", e.Type, err)
		}
		// column is one of this function's constants, never input.
		_, err = tx.Exec(ctx, `INSERT INTO analytics_daily AS a (organization_id, day, chatbot_id, `+column+`, reply_ms_sum)
			VALUES ($1, $2, $3, 1, $4)
			ON CONFLICT (organization_id, day, chatbot_id)
			DO UPDATE SET `+column+` = a.`+column+` + 1, reply_ms_sum = a.reply_ms_sum + excluded.reply_ms_sum`,
			e.OrganizationID, day, bot, replyMS)
		return err
	}
	switch ev := ev.(type) {
	case events.ConversationStarted:
		return count(ev.ChatbotID, "conversations", 0)
	case events.MessagePosted:
		if _, err := tx.Exec(ctx, `INSERT INTO analytics_replies (message_id, organization_id, chatbot_id, posted_at)
			VALUES ($1, $2, $3, $4) ON CONFLICT (message_id) DO NOTHING`, e.StreamID, e.OrganizationID, ev.ChatbotID, e.OccurredAt); err != nil {
			return err
		}
		return count(ev.ChatbotID, "messages", 0)
	case events.MessageReplied:
		var ms int64
		err := tx.QueryRow(ctx, `UPDATE analytics_replies
			SET replied_day = $2, reply_ms = greatest(0, round(extract(epoch FROM $3::timestamptz - posted_at) * 1000))
			WHERE message_id = $1 RETURNING reply_ms`, e.StreamID, day, e.OccurredAt).Scan(&ms)
		if err != nil {
			return fmt.Errorf("message.replied %s: its post: %w", e.StreamID, err)
		}
		return count(ev.ChatbotID, "replies", ms)
	case events.MessageFailed:
		bot, err := uuid.Parse(ev.ChatbotID)
		if err != nil {
			return fmt.Errorf("%s: chatbot_id: %w", e.Type, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO analytics_failures AS f (organization_id, day, chatbot_id, code, failed)
			VALUES ($1, $2, $3, $4, 1) ON CONFLICT (organization_id, day, chatbot_id, code) DO UPDATE SET failed = f.failed + 1`,
			e.OrganizationID, day, bot, ev.Code); err != nil {
			return err
		}
		return count(ev.ChatbotID, "failed", 0)
	}
	return nil
}

// ApplySet counts a run of conversation.started and message.posted events with two
// statements: the messages' reply rows, and one upsert of the run's counts per
// organization, day and chatbot. Counts add up in any order; a reply or a failure ends
// the run (it needs its message's row) and is applied alone, in order.
func (a Analytics) ApplySet(ctx context.Context, tx pgx.Tx, envs []events.Envelope) error {
	type key struct {
		org, bot uuid.UUID
		day      string
	}
	type counts struct{ conversations, messages int32 }
	var (
		sums                []key
		byKey               = map[key]*counts{}
		msgs, msgOrgs, bots []uuid.UUID
		posted              []time.Time
	)
	take := func(e events.Envelope) (bool, error) {
		if e.OrganizationID == nil || (e.Type != (events.ConversationStarted{}).EventType() && e.Type != (events.MessagePosted{}).EventType()) {
			return false, nil
		}
		ev, err := e.Decode()
		if err != nil {
			return false, err
		}
		var chatbot string
		switch ev := ev.(type) {
		case events.ConversationStarted:
			chatbot = ev.ChatbotID
		case events.MessagePosted:
			chatbot = ev.ChatbotID
		default:
			return false, nil
		}
		bot, err := uuid.Parse(chatbot)
		if err != nil {
			return false, nil // Apply says what is wrong with it
		}
		k := key{org: *e.OrganizationID, bot: bot, day: e.OccurredAt.UTC().Format("2006-01-02")}
		c := byKey[k]
		if c == nil {
			c = &counts{}
			byKey[k] = c
			sums = append(sums, k)
		}
		if e.Type == (events.MessagePosted{}).EventType() {
			c.messages++
			msgs, msgOrgs, bots, posted = append(msgs, e.StreamID), append(msgOrgs, *e.OrganizationID), append(bots, bot), append(posted, e.OccurredAt)
		} else {
			c.conversations++
		}
		return true, nil
	}
	flush := func() error {
		if len(sums) == 0 {
			return nil
		}
		if len(msgs) > 0 {
			if _, err := tx.Exec(ctx, `INSERT INTO analytics_replies (message_id, organization_id, chatbot_id, posted_at)
				SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::timestamptz[]) ON CONFLICT (message_id) DO NOTHING`,
				msgs, msgOrgs, bots, posted); err != nil {
				return err
			}
		}
		orgs, days, chatbots := make([]uuid.UUID, len(sums)), make([]string, len(sums)), make([]uuid.UUID, len(sums))
		convs, messages := make([]int32, len(sums)), make([]int32, len(sums))
		for i, k := range sums {
			orgs[i], days[i], chatbots[i] = k.org, k.day, k.bot
			convs[i], messages[i] = byKey[k].conversations, byKey[k].messages
		}
		// Each key once in the statement (an upsert may not touch a row twice).
		if _, err := tx.Exec(ctx, `INSERT INTO analytics_daily AS a (organization_id, day, chatbot_id, conversations, messages)
			SELECT * FROM unnest($1::uuid[], $2::date[], $3::uuid[], $4::int[], $5::int[])
			ON CONFLICT (organization_id, day, chatbot_id) DO UPDATE SET
				conversations = a.conversations + excluded.conversations, messages = a.messages + excluded.messages`,
			orgs, days, chatbots, convs, messages); err != nil {
			return err
		}
		// New ones: a pipelined statement holds its arguments until it is sent.
		sums, byKey, msgs, msgOrgs, bots, posted = nil, map[key]*counts{}, nil, nil, nil, nil
		return nil
	}
	return applyRuns(envs, take, flush, func(e events.Envelope) error { return a.Apply(ctx, tx, e) })
}
