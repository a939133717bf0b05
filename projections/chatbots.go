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

// ChatbotsName is the chatbots projector's name (its dead-letter queue is chatbotd.chatbots.dead).
const ChatbotsName = readmodel.ChatbotsProjection

// Chatbots builds the chatbots read model.
type Chatbots struct{}

func (Chatbots) Name() string { return ChatbotsName }

func (Chatbots) Bindings() []string {
	return []string{events.StreamChatbot + ".*", events.StreamKnowledge + ".*", events.StreamTraining + ".*"}
}

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
	case events.KnowledgeEntryAdded:
		err = insertEntries(ctx, tx, e, ev.ChatbotID, []events.KnowledgeEntry{ev.Entry})
	case events.KnowledgeImported:
		err = insertEntries(ctx, tx, e, ev.ChatbotID, ev.Entries)
	case events.KnowledgeEntryUpdated:
		_, err = tx.Exec(ctx, `UPDATE knowledge_entries SET question = $2, answer = $3, tags = $4, updated_at = $5
			WHERE id = $1`, ev.Entry.ID, ev.Entry.Question, ev.Entry.Answer, tagsOf(ev.Entry), at)
	case events.TrainingRequested:
		_, err = tx.Exec(ctx, `UPDATE chatbots SET training_status = 'pending' WHERE id = $1`, ev.ChatbotID)
	case events.TrainingCompleted:
		_, err = tx.Exec(ctx, `UPDATE chatbots SET training_status = 'completed', trained_at = $2, trained_entries = $3
			WHERE id = $1`, ev.ChatbotID, at, ev.Entries)
	case events.TrainingFailed:
		_, err = tx.Exec(ctx, `UPDATE chatbots SET training_status = 'failed' WHERE id = $1`, ev.ChatbotID)
	case events.KnowledgeEntryRemoved:
		_, err = tx.Exec(ctx, `UPDATE knowledge_entries SET deleted_at = $2, updated_at = $2 WHERE id = $1`, ev.EntryID, at)
	}
	return err
}

// ApplySet writes a run of chatbot.created events as one INSERT; every other event is
// applied alone, in order.
func (c Chatbots) ApplySet(ctx context.Context, tx pgx.Tx, envs []events.Envelope) error {
	var (
		ids, orgs                                     []uuid.UUID
		names, descs, welcomes, fallbacks, responders []string
		versions                                      []int32
		times                                         []time.Time
	)
	take := func(e events.Envelope) (bool, error) {
		b, ok, err := decodeAs[events.ChatbotCreated](e)
		if err != nil || !ok || e.OrganizationID == nil {
			return false, err
		}
		responder, err := json.Marshal(b.Responder)
		if err != nil {
			return false, err
		}
		ids, orgs, names, descs = append(ids, e.StreamID), append(orgs, *e.OrganizationID), append(names, b.Name), append(descs, b.Description)
		welcomes, fallbacks, responders = append(welcomes, b.WelcomeMessage), append(fallbacks, b.FallbackMessage), append(responders, string(responder))
		versions, times = append(versions, int32(e.StreamVersion)), append(times, e.OccurredAt)
		return true, nil
	}
	flush := func() error {
		if len(ids) == 0 {
			return nil
		}
		_, err := tx.Exec(ctx, `INSERT INTO chatbots (id, organization_id, name, description, welcome_message,
			fallback_message, status, responder, version, created_at, updated_at)
			SELECT u.id, u.org, u.name, u.descr, u.welcome, u.fallback, 'draft', u.responder::jsonb, u.v, u.at, u.at
			FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::int[], $9::timestamptz[])
				AS u(id, org, name, descr, welcome, fallback, responder, v, at)`,
			ids, orgs, names, descs, welcomes, fallbacks, responders, versions, times)
		// New slices: a pipelined statement holds its arguments until it is sent.
		ids, orgs, names, descs, welcomes, fallbacks, responders, versions, times = nil, nil, nil, nil, nil, nil, nil, nil, nil
		return err
	}
	return applyRuns(envs, take, flush, func(e events.Envelope) error { return c.Apply(ctx, tx, e) })
}

func tagsOf(e events.KnowledgeEntry) []string {
	if e.Tags == nil {
		return []string{}
	}
	return e.Tags
}

// insertEntries writes entries with COPY-like array inserts: an import of 10,000 entries
// is one statement.
func insertEntries(ctx context.Context, tx pgx.Tx, e events.Envelope, chatbot string, entries []events.KnowledgeEntry) error {
	ids := make([]string, len(entries))
	questions := make([]string, len(entries))
	answers := make([]string, len(entries))
	tags := make([]string, len(entries))
	for i, en := range entries {
		ids[i], questions[i], answers[i] = en.ID, en.Question, en.Answer
		tags[i] = textArray(tagsOf(en))
	}
	_, err := tx.Exec(ctx, `INSERT INTO knowledge_entries (id, chatbot_id, organization_id, question, answer, tags, created_at, updated_at)
		SELECT u.id::uuid, $1, $2, u.q, u.a, u.t::text[], $3, $3
		FROM unnest($4::text[], $5::text[], $6::text[], $7::text[]) AS u(id, q, a, t)`,
		chatbot, e.OrganizationID, e.OccurredAt, ids, questions, answers, tags)
	return err
}
