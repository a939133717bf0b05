package projections

import (
	"context"
	"encoding/json"
	"time"

	"github.com/google/uuid"
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

// ApplySet writes a run of message.posted events as one INSERT of their messages and one
// count per conversation (a run of 5,000 messages of 50 conversations is 51 statements,
// not 10,000). A message is a new row and the counts add up, so the run's order within
// itself does not matter; any other event ends the run and is applied alone, after it.
func (c Conversations) ApplySet(ctx context.Context, tx pgx.Tx, envs []events.Envelope) error {
	var (
		ids, convs, bots, orgs []uuid.UUID
		contents               []string
		times                  []time.Time
	)
	take := func(e events.Envelope) (bool, error) {
		m, ok, err := decodeAs[events.MessagePosted](e)
		if err != nil || !ok || e.OrganizationID == nil {
			return false, err
		}
		conv, err1 := uuid.Parse(m.ConversationID)
		bot, err2 := uuid.Parse(m.ChatbotID)
		if err1 != nil || err2 != nil {
			return false, nil // Apply reports it, as it always has
		}
		ids, convs, bots, orgs = append(ids, e.StreamID), append(convs, conv), append(bots, bot), append(orgs, *e.OrganizationID)
		contents, times = append(contents, m.Content), append(times, e.OccurredAt)
		return true, nil
	}
	flush := func() error {
		if len(ids) == 0 {
			return nil
		}
		if _, err := tx.Exec(ctx, `INSERT INTO messages (id, conversation_id, chatbot_id, organization_id, role, content,
			status, created_at, updated_at)
			SELECT u.id, u.conv, u.bot, u.org, 'user', u.content, 'queued', u.at, u.at
			FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::timestamptz[])
				AS u(id, conv, bot, org, content, at)`, ids, convs, bots, orgs, contents, times); err != nil {
			return err
		}
		type count struct {
			n    int
			last time.Time
		}
		counts := map[uuid.UUID]*count{}
		var order []uuid.UUID
		for i, conv := range convs {
			ct := counts[conv]
			if ct == nil {
				ct = &count{}
				counts[conv] = ct
				order = append(order, conv)
			}
			ct.n++
			if times[i].After(ct.last) {
				ct.last = times[i]
			}
		}
		// One primary-key update per conversation: an UPDATE … FROM a set of them may be
		// planned as a scan of every conversation on a table that grew since it was analyzed.
		for _, conv := range order {
			if _, err := tx.Exec(ctx, `UPDATE conversations SET messages = messages + $2,
				last_message_at = GREATEST(last_message_at, $3) WHERE id = $1`, conv, counts[conv].n, counts[conv].last); err != nil {
				return err
			}
		}
		// New slices, not the old ones emptied: a pipelined statement holds its arguments
		// until it is sent.
		ids, convs, bots, orgs, contents, times = nil, nil, nil, nil, nil, nil
		return nil
	}
	return applyRuns(envs, take, flush, func(e events.Envelope) error { return c.Apply(ctx, tx, e) })
}
