package projections

import (
	"context"
	"encoding/json"

	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
)

// ConversationsName is the conversations projector's name.
const ConversationsName = readmodel.ConversationsProjection

// Conversations builds the conversations and (monthly partitioned) messages read models.
type Conversations struct{}

func (Conversations) Name() string { return ConversationsName }

func (Conversations) Bindings() []string {
	return []string{events.StreamConversation + ".*", events.StreamMessage + ".*"}
}

// Apply changes the read models for one event.
func (Conversations) Apply(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
	ev, err := e.Decode()
	if err != nil {
		return err
	}
	id, at := e.StreamID, e.OccurredAt
	switch ev := ev.(type) {
	case events.ConversationStarted:
		meta, err := json.Marshal(ev.Metadata)
		if err != nil {
			return err
		}
		// Messages are streams of their own: any applied before the conversation (a
		// redelivery can reorder them) are counted here, so the order never matters.
		_, err = tx.Exec(ctx, `INSERT INTO conversations (id, organization_id, chatbot_id, metadata, messages, last_message_at, created_at)
			SELECT $1, $2, $3, $4, count(*), max(m.created_at), $5 FROM messages m WHERE m.conversation_id = $1`,
			id, e.OrganizationID, ev.ChatbotID, meta, at)
		return err
	case events.MessagePosted:
		if _, err := tx.Exec(ctx, `INSERT INTO messages (id, conversation_id, chatbot_id, organization_id, role, content,
			status, created_at, updated_at) VALUES ($1, $2, $3, $4, 'user', $5, 'queued', $6, $6)`,
			id, ev.ConversationID, ev.ChatbotID, e.OrganizationID, ev.Content, at); err != nil {
			return err
		}
		return countMessage(ctx, tx, ev.ConversationID, at)
	case events.MessageReplied:
		if _, err := tx.Exec(ctx, `UPDATE messages SET status = 'answered', updated_at = $2 WHERE id = $1`, id, at); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO messages (id, conversation_id, chatbot_id, organization_id, role, content,
			reply_to, created_at, updated_at) VALUES ($1, $2, $3, $4, 'bot', $5, $6, $7, $7)`,
			ev.ReplyID, ev.ConversationID, ev.ChatbotID, e.OrganizationID, ev.Content, id, at); err != nil {
			return err
		}
		return countMessage(ctx, tx, ev.ConversationID, at)
	case events.MessageFailed:
		_, err = tx.Exec(ctx, `UPDATE messages SET status = 'failed', failure_code = $2, failure_reason = $3, updated_at = $4
			WHERE id = $1`, id, ev.Code, ev.Reason, at)
	}
	return err
}

func countMessage(ctx context.Context, tx pgx.Tx, conversation string, at any) error {
	// Messages are streams of their own and may be applied in any order: the latest time
	// wins, not the last applied.
	_, err := tx.Exec(ctx, `UPDATE conversations SET messages = messages + 1,
		last_message_at = GREATEST(last_message_at, $2) WHERE id = $1`, conversation, at)
	return err
}
