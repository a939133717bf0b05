package command

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/chatbotsaas/chatbotd/command/domain"
	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/auth"
	"github.com/chatbotsaas/chatbotd/internal/rbac"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
)

// loadKnowledge folds a knowledge stream, returning the state and its version.
func loadKnowledge(ctx context.Context, store *eventstore.Store, stream uuid.UUID) (domain.Knowledge, int, error) {
	var k domain.Knowledge
	envs, err := store.ReadStream(ctx, stream, 1, 0)
	if err != nil {
		return k, 0, err
	}
	for _, e := range envs {
		ev, err := e.Decode()
		if err != nil {
			return k, 0, err
		}
		k = domain.EvolveKnowledge(k, ev, e.OccurredAt)
	}
	return k, len(envs), nil
}

// EntryView is a knowledge entry as the API shows it.
type EntryView = readmodel.KnowledgeEntry

// liveChatbot checks that a chatbot is live in the caller's organization.
func (s *Service) liveChatbot(ctx context.Context, p auth.Principal, chatbot uuid.UUID) (loaded[domain.Chatbot], error) {
	bot, err := load(ctx, s.store, chatbot, domain.EvolveChatbot)
	if err != nil {
		return bot, err
	}
	if !bot.State.Live() || bot.OrganizationID != p.OrganizationID {
		return bot, apperr.NotFound("chatbot")
	}
	return bot, nil
}

// Training is what a training request answers (202): the index is built in the
// background, and GET /chatbots/{id} shows its progress.
type Training struct {
	Status           string `json:"status"`
	KnowledgeVersion int    `json:"knowledge_version"`
}

// RequestTraining asks for the chatbot's search index to be built from its knowledge
// base as it is now.
func (s *Service) RequestTraining(ctx context.Context, meta events.Meta, p auth.Principal, chatbot uuid.UUID) (Result[Training], error) {
	if err := p.Require(rbac.ChatbotsWrite); err != nil {
		return Result[Training]{}, err
	}
	if _, err := s.liveChatbot(ctx, p, chatbot); err != nil {
		return Result[Training]{}, err
	}
	envs, err := s.store.ReadStream(ctx, events.KnowledgeStreamID(chatbot), 1, 0)
	if err != nil {
		return Result[Training]{}, err
	}
	version := len(envs)
	tok, err := s.store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamTraining, StreamID: events.TrainingStreamID(chatbot),
		ExpectedVersion: eventstore.AnyVersion, OrganizationID: &p.OrganizationID, Meta: actor(p, meta),
		Events: []events.Event{events.TrainingRequested{ChatbotID: chatbot.String(), KnowledgeVersion: version}}})
	return Result[Training]{Data: Training{Status: "pending", KnowledgeVersion: version}, Token: tok}, err
}

// knowledgeChange checks that the chatbot is live in the caller's organization, then
// decides on its knowledge stream and appends at the loaded version. It returns the
// state the decision saw.
func (s *Service) knowledgeChange(ctx context.Context, meta events.Meta, p auth.Principal, chatbot uuid.UUID,
	decide func(domain.Knowledge) ([]events.Event, error),
) (events.AppendResult, domain.Knowledge, error) {
	var seen domain.Knowledge
	if err := p.Require(rbac.ChatbotsWrite); err != nil {
		return events.AppendResult{}, seen, err
	}
	if _, err := s.liveChatbot(ctx, p, chatbot); err != nil {
		return events.AppendResult{}, seen, err
	}
	stream := events.KnowledgeStreamID(chatbot)
	tok, err := retryOnConflict(false, func() (events.AppendResult, error) {
		k, version, err := loadKnowledge(ctx, s.store, stream)
		if err != nil {
			return events.AppendResult{}, err
		}
		seen = k
		evs, err := decide(k)
		if err != nil {
			return events.AppendResult{}, err
		}
		return s.store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamKnowledge, StreamID: stream,
			ExpectedVersion: version, OrganizationID: &p.OrganizationID, Events: evs, Meta: actor(p, meta)})
	})
	return tok, seen, err
}

func entryView(chatbot, id uuid.UUID, in domain.EntryInput, created, updated time.Time) EntryView {
	tags := in.Tags
	if tags == nil {
		tags = []string{}
	}
	return EntryView{ID: id, ChatbotID: chatbot, Question: in.Question, Answer: in.Answer, Tags: tags, CreatedAt: created, UpdatedAt: updated}
}

// AddEntry adds one knowledge entry.
func (s *Service) AddEntry(ctx context.Context, meta events.Meta, p auth.Principal, chatbot uuid.UUID, in domain.EntryInput) (Result[EntryView], error) {
	f := apperr.Fields{}
	in.Check(f, "")
	if err := f.Err(); err != nil {
		return Result[EntryView]{}, err
	}
	id := uuid.Must(uuid.NewV7())
	tok, _, err := s.knowledgeChange(ctx, meta, p, chatbot, func(domain.Knowledge) ([]events.Event, error) { return domain.DecideAddEntry(chatbot, id, in) })
	return Result[EntryView]{Data: entryView(chatbot, id, in, tok.OccurredAt, tok.OccurredAt), Token: tok}, err
}

// UpdateEntry replaces one knowledge entry.
func (s *Service) UpdateEntry(ctx context.Context, meta events.Meta, p auth.Principal, chatbot, id uuid.UUID, in domain.EntryInput) (Result[EntryView], error) {
	f := apperr.Fields{}
	in.Check(f, "")
	if err := f.Err(); err != nil {
		return Result[EntryView]{}, err
	}
	tok, k, err := s.knowledgeChange(ctx, meta, p, chatbot, func(k domain.Knowledge) ([]events.Event, error) { return domain.DecideUpdateEntry(k, chatbot, id, in) })
	return Result[EntryView]{Data: entryView(chatbot, id, in, k.Created[id.String()], tok.OccurredAt), Token: tok}, err
}

// PatchEntry changes the fields of one knowledge entry that p carries (PATCH); the others
// stay as they are.
func (s *Service) PatchEntry(ctx context.Context, meta events.Meta, p auth.Principal, chatbot, id uuid.UUID, patch domain.EntryPatch) (Result[EntryView], error) {
	var merged domain.EntryInput
	tok, k, err := s.knowledgeChange(ctx, meta, p, chatbot, func(k domain.Knowledge) ([]events.Event, error) {
		in, evs, err := domain.DecidePatchEntry(k, chatbot, id, patch)
		merged = in
		return evs, err
	})
	return Result[EntryView]{Data: entryView(chatbot, id, merged, k.Created[id.String()], tok.OccurredAt), Token: tok}, err
}

// RemoveEntry removes one knowledge entry.
func (s *Service) RemoveEntry(ctx context.Context, meta events.Meta, p auth.Principal, chatbot, id uuid.UUID) (Result[struct{}], error) {
	tok, _, err := s.knowledgeChange(ctx, meta, p, chatbot, func(k domain.Knowledge) ([]events.Event, error) { return domain.DecideRemoveEntry(k, chatbot, id) })
	return Result[struct{}]{Token: tok}, err
}

// Imported is what an import returns.
type Imported struct {
	Imported int `json:"imported"`
}

// ImportEntries adds many entries at once, all or nothing.
func (s *Service) ImportEntries(ctx context.Context, meta events.Meta, p auth.Principal, chatbot uuid.UUID, rows []domain.EntryInput) (Result[Imported], error) {
	if err := domain.ValidateImport(rows); err != nil {
		return Result[Imported]{}, err
	}
	entries := make([]events.KnowledgeEntry, len(rows))
	for i, r := range rows {
		entries[i] = r.Entry(uuid.Must(uuid.NewV7()))
	}
	tok, _, err := s.knowledgeChange(ctx, meta, p, chatbot, func(domain.Knowledge) ([]events.Event, error) {
		return []events.Event{events.KnowledgeImported{ChatbotID: chatbot.String(), Entries: entries}}, nil
	})
	return Result[Imported]{Data: Imported{Imported: len(rows)}, Token: tok}, err
}
