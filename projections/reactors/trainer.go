package reactors

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/command/domain"
	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
)

// TrainerName is the trainer's name (its queue is chatbotd.trainer).
const TrainerName = "trainer"

// Trainer builds a chatbot's search index (knowledge_index) when training is requested:
// from the knowledge stream as it was at the request, in one transaction with the
// training.completed event it appends, so the index and the event exist together and
// once. A request that a newer one superseded is skipped.
type Trainer struct {
	Store *eventstore.Store
}

func (Trainer) Name() string { return TrainerName }

func (Trainer) Bindings() []string { return []string{"training.requested"} }

// Apply builds the index for one request.
func (t Trainer) Apply(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
	if e.Type != (events.TrainingRequested{}).EventType() {
		return nil // the stream's other events (read by gap repair) need nothing
	}
	ev, err := e.Decode()
	if err != nil {
		return err
	}
	req := ev.(events.TrainingRequested)
	var current int
	if err := tx.QueryRow(ctx, `SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = $1`, e.StreamID).Scan(&current); err != nil {
		return err
	}
	if current != e.StreamVersion {
		return nil // superseded by a newer request, or completed already
	}
	chatbot, err := uuid.Parse(req.ChatbotID)
	if err != nil {
		return fmt.Errorf("training.requested: chatbot_id: %w", err)
	}
	var history []events.Envelope
	if req.KnowledgeVersion > 0 { // 0: an empty knowledge base, an empty index
		if history, err = eventstore.ReadStream(ctx, tx, events.KnowledgeStreamID(chatbot), 1, req.KnowledgeVersion); err != nil {
			return err
		}
	}
	// The knowledge base as the command side sees it, folded the same way.
	var k domain.Knowledge
	for _, h := range history {
		kev, err := h.Decode()
		if err != nil {
			return err
		}
		k = domain.EvolveKnowledge(k, kev, h.OccurredAt)
	}
	entries := k.Contents
	if _, err := tx.Exec(ctx, `DELETE FROM knowledge_index WHERE chatbot_id = $1`, chatbot); err != nil {
		return err
	}
	ids := make([]string, 0, len(entries))
	questions := make([]string, 0, len(entries))
	answers := make([]string, 0, len(entries))
	for id, en := range entries {
		ids, questions, answers = append(ids, id), append(questions, en.Question), append(answers, en.Answer)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO knowledge_index (chatbot_id, entry_id, question, answer)
		SELECT $1, u.id::uuid, u.q, u.a FROM unnest($2::text[], $3::text[], $4::text[]) AS u(id, q, a)`,
		chatbot, ids, questions, answers); err != nil {
		return err
	}
	_, err = t.Store.AppendTx(ctx, tx, eventstore.AppendRequest{StreamType: events.StreamTraining, StreamID: e.StreamID,
		ExpectedVersion: e.StreamVersion, OrganizationID: e.OrganizationID,
		Events: []events.Event{events.TrainingCompleted{ChatbotID: req.ChatbotID, Entries: len(entries), KnowledgeVersion: req.KnowledgeVersion}},
		Meta:   events.CausedBy(e)})
	return err
}

// AfterCommit wakes the relay for the training.completed events just committed.
func (t Trainer) AfterCommit(context.Context, []events.Envelope) error {
	t.Store.Notify()
	return nil
}

// DeadLettered records that a training request failed for good, unless a newer one came.
func (t Trainer) DeadLettered(ctx context.Context, e events.Envelope, cause error) {
	ev, err := e.Decode()
	req, ok := ev.(events.TrainingRequested)
	if err != nil || !ok {
		return
	}
	_, _ = t.Store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamTraining, StreamID: e.StreamID,
		ExpectedVersion: e.StreamVersion, OrganizationID: e.OrganizationID,
		Events: []events.Event{events.TrainingFailed{ChatbotID: req.ChatbotID, Reason: "building the index failed"}},
		Meta:   events.CausedBy(e)})
}
