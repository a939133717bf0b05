package projections

import (
	"context"
	"encoding/json"

	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
)

// ChatbotsName is the chatbots projector's name (its queue is chatbotd.chatbots).
const ChatbotsName = readmodel.ChatbotsProjection

// Chatbots builds the chatbots read model.
type Chatbots struct{}

func (Chatbots) Name() string { return ChatbotsName }

func (Chatbots) Bindings() []string { return []string{events.StreamChatbot + ".*"} }

// Apply changes the read model for one event.
func (Chatbots) Apply(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
	ev, err := e.Decode()
	if err != nil {
		return err
	}
	id, v, at := e.StreamID, e.StreamVersion, e.OccurredAt
	switch ev := ev.(type) {
	case events.ChatbotCreated:
		responder, err := json.Marshal(ev.Responder)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO chatbots (id, organization_id, name, description, welcome_message,
			fallback_message, status, responder, version, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, 'draft', $7, $8, $9, $9)`,
			id, e.OrganizationID, ev.Name, ev.Description, ev.WelcomeMessage, ev.FallbackMessage, responder, v, at)
		return err
	case events.ChatbotUpdated:
		var responder []byte
		if ev.Responder != nil {
			if responder, err = json.Marshal(ev.Responder); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, `UPDATE chatbots SET name = coalesce($2, name), description = coalesce($3, description),
			welcome_message = coalesce($4, welcome_message), fallback_message = coalesce($5, fallback_message),
			responder = coalesce($6, responder), version = $7, updated_at = $8 WHERE id = $1`,
			id, changed(ev.Changes, "name"), changed(ev.Changes, "description"), changed(ev.Changes, "welcome_message"),
			changed(ev.Changes, "fallback_message"), responder, v, at)
		return err
	case events.ChatbotPublished:
		_, err = tx.Exec(ctx, `UPDATE chatbots SET status = 'published', version = $2, updated_at = $3 WHERE id = $1`, id, v, at)
	case events.ChatbotUnpublished:
		_, err = tx.Exec(ctx, `UPDATE chatbots SET status = 'draft', version = $2, updated_at = $3 WHERE id = $1`, id, v, at)
	case events.ChatbotDeleted:
		_, err = tx.Exec(ctx, `UPDATE chatbots SET deleted_at = $3, version = $2, updated_at = $3 WHERE id = $1`, id, v, at)
	}
	return err
}
