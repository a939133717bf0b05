package reactors

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/chatbotsaas/chatbotd/command/domain"
	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
)

// fold reads a stream and folds it with one of the domain's Evolve functions (the same
// the command side loads aggregates with): a reactor never re-implements a decision's
// state. It returns the state and the stream's version.
func fold[S any](ctx context.Context, q eventstore.Querier, id uuid.UUID, evolve func(S, events.Event) S) (S, int, error) {
	var s S
	envs, err := eventstore.ReadStream(ctx, q, id, 1, 0)
	if err != nil {
		return s, 0, err
	}
	version := 0
	for _, env := range envs {
		ev, err := env.Decode()
		if err != nil {
			return s, 0, err
		}
		s, version = evolve(s, ev), env.StreamVersion
	}
	return s, version, nil
}

// messageState is a posted message as the domain sees it, with its stream's version.
func messageState(ctx context.Context, q eventstore.Querier, id uuid.UUID) (domain.Message, int, error) {
	return fold(ctx, q, id, domain.EvolveMessage)
}

// routedTo is the responder that answers a message: the type of its chatbot's responder
// as it was when the message was posted, in commit order (eventstore.ReadStreamBefore),
// the same for every responder whenever it looks. The chatbot as it is now could differ
// between the knowledge-base responder's look and the webhook responder's: a message
// posted while the responder was a webhook and switched to the knowledge base before the
// webhook responder looked was skipped by both, and stayed unanswered. A message whose
// chatbot was not live when it was posted goes to the knowledge-base responder, which
// fails it. It also returns the chatbot as it was then, and as it is now: one read of its
// stream.
func routedTo(ctx context.Context, q eventstore.Querier, bot uuid.UUID, posted events.Envelope) (route string, then, now domain.Chatbot, err error) {
	envs, before, err := eventstore.ReadStreamBefore(ctx, q, bot, posted.ID)
	if err != nil {
		return "", then, now, err
	}
	for i, env := range envs {
		ev, err := env.Decode()
		if err != nil {
			return "", then, now, err
		}
		if before[i] {
			then = domain.EvolveChatbot(then, ev)
		}
		now = domain.EvolveChatbot(now, ev)
	}
	if then.Live() && then.Responder.Type == domain.ResponderWebhook {
		return domain.ResponderWebhook, then, now, nil
	}
	return domain.ResponderKnowledgeBase, then, now, nil
}

// decideAnswer is the one reply-once rule for every responder and every dead letter:
// the domain's DecideReply or DecideFail on the message as it is now. Nothing decided
// means the message has its answer already.
func decideAnswer(m domain.Message, answer events.Event) ([]events.Event, error) {
	switch a := answer.(type) {
	case events.MessageReplied:
		return domain.DecideReply(m, a)
	case events.MessageFailed:
		return domain.DecideFail(m, a)
	}
	return nil, fmt.Errorf("%s is no answer to a message", answer.EventType())
}

// answerRequest is the append of a message's answer, decided on the message as loaded at
// version: the stream's expected version makes a concurrent second answer a conflict.
func answerRequest(e events.Envelope, version int, evs []events.Event) eventstore.AppendRequest {
	return eventstore.AppendRequest{StreamType: events.StreamMessage, StreamID: e.StreamID, ExpectedVersion: version,
		OrganizationID: e.OrganizationID, Events: evs, Meta: events.CausedBy(e)}
}
