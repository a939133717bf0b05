package projections

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/db"
	"github.com/chatbotsaas/chatbotd/projections/reactors"
)

// WebhookSweep is how the sweep checks the webhook responder (reactors.WebhookResponder),
// which answers messages to webhook chatbots on watermill's router and records no stream
// versions: what it did shows in the log instead, as the message's answer (its stream's
// version 2, the reply or the failure). A posted message that no responder answered
// stays queued forever when the broker loses it on its way to the webhook responder.
//
// A message of the stretch is the webhook responder's when the knowledge-base responder,
// which takes every posted message and answers its own chatbots' in the transaction that
// records it, has applied it and it is still unanswered. It is taken for lost when the
// webhook responder's queue has nothing waiting and, Hold later, it is still unanswered
// and the queue still has nothing waiting: a message delivered before the first look was
// either answered within Hold or never came. It is then published again to the webhook
// responder's queue alone, which answers it once (its decision rejects a second answer);
// the workflow may then be called twice, as on any redelivery.
type WebhookSweep struct {
	// Queue is the webhook responder's queue.
	Queue string
	// Hold is the longest the webhook responder takes over a message, from its delivery
	// to its answer in the log (reactors.WebhookResponder.Longest).
	Hold time.Duration
	// Store is stamped on what is published again, as the relay does (Identity).
	Store uuid.UUID
}

// webhookTarget sweeps the webhook responder.
type webhookTarget struct{ w *WebhookSweep }

func (webhookTarget) name() string { return reactors.WebhookResponderName }

func (t webhookTarget) ready(ctx context.Context, s *Sweep, _ *pgxpool.Conn, _ map[string]layoutRow, _ eventstore.Checkpoint) (*look, error) {
	waiting, err := s.waitingIn(ctx, []string{t.w.Queue})
	if err != nil || waiting != "" {
		return nil, err
	}
	return &look{}, nil
}

func (t webhookTarget) check(ctx context.Context, s *Sweep, c *pgxpool.Conn, _ map[string]layoutRow,
	from, to eventstore.Checkpoint, page []eventstore.Published, _ *look) (int, error) {
	posted := (events.MessagePosted{}).EventType()
	var messages []uuid.UUID
	for _, p := range page {
		if p.Type == posted && p.StreamVersion == 1 {
			messages = append(messages, p.StreamID)
		}
	}
	lost, err := unansweredWebhookMessages(ctx, c, messages)
	if err != nil || len(lost) == 0 {
		return 0, err
	}
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(t.w.Hold):
	}
	waiting, err := s.waitingIn(ctx, []string{t.w.Queue})
	if err != nil {
		return 0, err
	}
	if waiting != "" {
		return 0, errBusy
	}
	if lost, err = unansweredWebhookMessages(ctx, c, lost); err != nil || len(lost) == 0 {
		return 0, err
	}
	envs, err := s.redrive(ctx, c, from, to, lost, eventstore.RedriveTarget{Key: t.w.Queue, Store: t.w.Store})
	if err != nil {
		return 0, err
	}
	if s.Logger != nil {
		first := envs[0]
		s.Logger.Warn("messages unanswered long after the broker confirmed them: published again from the log",
			"projection", reactors.WebhookResponderName, "messages", len(envs),
			"first_event_id", first.ID, "first_message_id", first.StreamID, "first_position", first.Position)
	}
	s.Metrics.Redriven(reactors.WebhookResponderName, len(envs))
	return len(envs), nil
}

// unansweredWebhookMessages are the messages, of those given, that the webhook responder
// is to answer and has not: unanswered (their stream has no version 2) though the
// knowledge-base responder has applied them. It returns errBusy when the knowledge-base
// responder has not applied one yet: whose the message is is not known before (a loss
// on the knowledge-base responder's way is its own sweep's).
func unansweredWebhookMessages(ctx context.Context, c *pgxpool.Conn, messages []uuid.UUID) ([]uuid.UUID, error) {
	if len(messages) == 0 {
		return nil, nil
	}
	rows, err := c.Query(ctx, `SELECT u.s, ps.version IS NOT NULL FROM unnest($1::uuid[]) AS u(s)
		LEFT JOIN projection_streams ps ON ps.projection = $2 AND ps.stream_id = u.s AND ps.version >= 1
		WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.stream_id = u.s AND e.stream_version >= 2)`,
		messages, reactors.ResponderName)
	if err != nil {
		return nil, db.Classify(err)
	}
	type message struct {
		id      uuid.UUID
		applied bool
	}
	found, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (message, error) {
		var m message
		err := r.Scan(&m.id, &m.applied)
		return m, err
	})
	if err != nil {
		return nil, db.Classify(err)
	}
	var out []uuid.UUID
	for _, m := range found {
		if !m.applied {
			return nil, fmt.Errorf("message %s: %w", m.id, errBusy)
		}
		out = append(out, m.id)
	}
	return out, nil
}
