package projections

import (
	"context"
	"fmt"

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
