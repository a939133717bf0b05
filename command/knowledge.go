package command

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/auth"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
)

// MaxImport is the most entries one import may carry.
const MaxImport = 10000

// knowledgeNamespace derives each chatbot's knowledge stream id from the chatbot's id.
var knowledgeNamespace = uuid.MustParse("9a4f1e3c-54d2-4b0e-8d5c-7f1a2b3c4d5e")

// KnowledgeStream is the id of a chatbot's knowledge stream.
func KnowledgeStream(chatbot uuid.UUID) uuid.UUID {
	return uuid.NewSHA1(knowledgeNamespace, chatbot[:])
}

// Knowledge is a knowledge base's state: the live entries, with when each was created.
type Knowledge struct {
	Entries map[string]time.Time
}

// EvolveKnowledge applies one event that happened at the given time.
func EvolveKnowledge(k Knowledge, e events.Event, at time.Time) Knowledge {
	if k.Entries == nil {
		k.Entries = map[string]time.Time{}
	}
	switch e := e.(type) {
	case events.KnowledgeEntryAdded:
		k.Entries[e.Entry.ID] = at
	case events.KnowledgeImported:
		for _, en := range e.Entries {
			k.Entries[en.ID] = at
		}
	case events.KnowledgeEntryRemoved:
		delete(k.Entries, e.EntryID)
	}
	return k
}

// loadKnowledge folds a knowledge stream, returning the state and its version.
func loadKnowledge(ctx context.Context, store *eventstore.Store, stream uuid.UUID) (Knowledge, int, error) {
	k := Knowledge{Entries: map[string]time.Time{}}
	envs, err := store.ReadStream(ctx, stream, 1, 0)
	if err != nil {
		return k, 0, err
	}
	for _, e := range envs {
		ev, err := e.Decode()
		if err != nil {
			return k, 0, err
		}
		k = EvolveKnowledge(k, ev, e.OccurredAt)
	}
	return k, len(envs), nil
}

// EntryInput is a knowledge entry as a client sends it.
type EntryInput struct {
	Question string   `json:"question"`
	Answer   string   `json:"answer"`
	Tags     []string `json:"tags"`
}

// validate checks the entry, naming fields with prefix (e.g. "entries[3].").
func (in *EntryInput) validate(f apperr.Fields, prefix string) {
	in.Question, in.Answer = strings.TrimSpace(in.Question), strings.TrimSpace(in.Answer)
	switch n := utf8.RuneCountInString(in.Question); {
	case n == 0:
		f.Add(prefix+"question", "is required")
	case n > 1000:
		f.Add(prefix+"question", "must be at most 1000 characters")
	}
	switch n := utf8.RuneCountInString(in.Answer); {
	case n == 0:
		f.Add(prefix+"answer", "is required")
	case n > 4000:
		f.Add(prefix+"answer", "must be at most 4000 characters")
	}
	if len(in.Tags) > 20 {
		f.Add(prefix+"tags", "must have at most 20 tags")
	}
	tags := make([]string, 0, len(in.Tags))
	for _, t := range in.Tags {
		t = strings.TrimSpace(t)
		if t == "" || utf8.RuneCountInString(t) > 50 {
			f.Add(prefix+"tags", "each tag must be 1 to 50 characters")
			continue
		}
		tags = append(tags, t)
	}
	in.Tags = tags
}

func (in EntryInput) entry(id uuid.UUID) events.KnowledgeEntry {
	return events.KnowledgeEntry{ID: id.String(), Question: in.Question, Answer: in.Answer, Tags: in.Tags}
}

// DecideAddEntry adds an entry.
func DecideAddEntry(chatbot uuid.UUID, id uuid.UUID, in EntryInput) ([]events.Event, error) {
	return []events.Event{events.KnowledgeEntryAdded{ChatbotID: chatbot.String(), Entry: in.entry(id)}}, nil
}

// DecideUpdateEntry replaces an existing entry.
func DecideUpdateEntry(k Knowledge, chatbot, id uuid.UUID, in EntryInput) ([]events.Event, error) {
	if _, ok := k.Entries[id.String()]; !ok {
		return nil, apperr.NotFound("knowledge entry")
	}
	return []events.Event{events.KnowledgeEntryUpdated{ChatbotID: chatbot.String(), Entry: in.entry(id)}}, nil
}

// DecideRemoveEntry removes an existing entry.
func DecideRemoveEntry(k Knowledge, chatbot, id uuid.UUID) ([]events.Event, error) {
	if _, ok := k.Entries[id.String()]; !ok {
		return nil, apperr.NotFound("knowledge entry")
	}
	return []events.Event{events.KnowledgeEntryRemoved{ChatbotID: chatbot.String(), EntryID: id.String()}}, nil
}

// ValidateImport checks every row, naming each bad one; nothing is imported unless all
// are good.
func ValidateImport(rows []EntryInput) error {
	f := apperr.Fields{}
	switch {
	case len(rows) == 0:
		f.Add("entries", "must have at least one entry")
	case len(rows) > MaxImport:
		f.Add("entries", fmt.Sprintf("must have at most %d entries, not %d", MaxImport, len(rows)))
	}
	for i := range rows {
		rows[i].validate(f, fmt.Sprintf("entries[%d].", i))
	}
	return f.Err()
}

// EntryView is a knowledge entry as the API shows it.
type EntryView = readmodel.KnowledgeEntry

// liveChatbot checks that a chatbot is live in the caller's organization.
func (s *Service) liveChatbot(ctx context.Context, p auth.Principal, chatbot uuid.UUID) (loaded[Chatbot], error) {
	bot, err := load(ctx, s.store, chatbot, EvolveChatbot)
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
	if err := p.Require(auth.ChatbotsWrite); err != nil {
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
	decide func(Knowledge) ([]events.Event, error),
) (events.AppendResult, Knowledge, error) {
	var seen Knowledge
	if err := p.Require(auth.ChatbotsWrite); err != nil {
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

func entryView(chatbot, id uuid.UUID, in EntryInput, created, updated time.Time) EntryView {
	tags := in.Tags
	if tags == nil {
		tags = []string{}
	}
	return EntryView{ID: id, ChatbotID: chatbot, Question: in.Question, Answer: in.Answer, Tags: tags, CreatedAt: created, UpdatedAt: updated}
}

// AddEntry adds one knowledge entry.
func (s *Service) AddEntry(ctx context.Context, meta events.Meta, p auth.Principal, chatbot uuid.UUID, in EntryInput) (Result[EntryView], error) {
	f := apperr.Fields{}
	in.validate(f, "")
	if err := f.Err(); err != nil {
		return Result[EntryView]{}, err
	}
	id := uuid.Must(uuid.NewV7())
	tok, _, err := s.knowledgeChange(ctx, meta, p, chatbot, func(Knowledge) ([]events.Event, error) { return DecideAddEntry(chatbot, id, in) })
	return Result[EntryView]{Data: entryView(chatbot, id, in, tok.OccurredAt, tok.OccurredAt), Token: tok}, err
}

// UpdateEntry replaces one knowledge entry.
func (s *Service) UpdateEntry(ctx context.Context, meta events.Meta, p auth.Principal, chatbot, id uuid.UUID, in EntryInput) (Result[EntryView], error) {
	f := apperr.Fields{}
	in.validate(f, "")
	if err := f.Err(); err != nil {
		return Result[EntryView]{}, err
	}
	tok, k, err := s.knowledgeChange(ctx, meta, p, chatbot, func(k Knowledge) ([]events.Event, error) { return DecideUpdateEntry(k, chatbot, id, in) })
	return Result[EntryView]{Data: entryView(chatbot, id, in, k.Entries[id.String()], tok.OccurredAt), Token: tok}, err
}

// RemoveEntry removes one knowledge entry.
func (s *Service) RemoveEntry(ctx context.Context, meta events.Meta, p auth.Principal, chatbot, id uuid.UUID) (Result[struct{}], error) {
	tok, _, err := s.knowledgeChange(ctx, meta, p, chatbot, func(k Knowledge) ([]events.Event, error) { return DecideRemoveEntry(k, chatbot, id) })
	return Result[struct{}]{Token: tok}, err
}

// Imported is what an import returns.
type Imported struct {
	Imported int `json:"imported"`
}

// ImportEntries adds many entries at once, all or nothing.
func (s *Service) ImportEntries(ctx context.Context, meta events.Meta, p auth.Principal, chatbot uuid.UUID, rows []EntryInput) (Result[Imported], error) {
	if err := ValidateImport(rows); err != nil {
		return Result[Imported]{}, err
	}
	entries := make([]events.KnowledgeEntry, len(rows))
	for i, r := range rows {
		entries[i] = r.entry(uuid.Must(uuid.NewV7()))
	}
	tok, _, err := s.knowledgeChange(ctx, meta, p, chatbot, func(Knowledge) ([]events.Event, error) {
		return []events.Event{events.KnowledgeImported{ChatbotID: chatbot.String(), Entries: entries}}, nil
	})
	return Result[Imported]{Data: Imported{Imported: len(rows)}, Token: tok}, err
}
