package domain

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
)

// MaxImport is the most entries one import may carry.
const MaxImport = 10000

// Knowledge is a knowledge base's state: the live entries, with when each was created
// (Created) and what each says now (Contents). The command side and the trainer fold the
// stream with EvolveKnowledge alike.
type Knowledge struct {
	Created  map[string]time.Time
	Contents map[string]events.KnowledgeEntry
}

// EvolveKnowledge applies one event that happened at the given time.
func EvolveKnowledge(k Knowledge, e events.Event, at time.Time) Knowledge {
	if k.Created == nil {
		k.Created, k.Contents = map[string]time.Time{}, map[string]events.KnowledgeEntry{}
	}
	switch e := e.(type) {
	case events.KnowledgeEntryAdded:
		k.Created[e.Entry.ID], k.Contents[e.Entry.ID] = at, e.Entry
	case events.KnowledgeEntryUpdated:
		k.Contents[e.Entry.ID] = e.Entry
	case events.KnowledgeImported:
		for _, en := range e.Entries {
			k.Created[en.ID], k.Contents[en.ID] = at, en
		}
	case events.KnowledgeEntryRemoved:
		delete(k.Created, e.EntryID)
		delete(k.Contents, e.EntryID)
	}
	return k
}

// EntryInput is a knowledge entry as a client sends it.
type EntryInput struct {
	Question string   `json:"question"`
	Answer   string   `json:"answer"`
	Tags     []string `json:"tags"`
}

// Check checks and trims the entry, naming fields with prefix (e.g. "entries[3].").
func (in *EntryInput) Check(f apperr.Fields, prefix string) {
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

func (in EntryInput) Entry(id uuid.UUID) events.KnowledgeEntry {
	return events.KnowledgeEntry{ID: id.String(), Question: in.Question, Answer: in.Answer, Tags: in.Tags}
}

// DecideAddEntry adds an entry.
func DecideAddEntry(chatbot uuid.UUID, id uuid.UUID, in EntryInput) ([]events.Event, error) {
	return []events.Event{events.KnowledgeEntryAdded{ChatbotID: chatbot.String(), Entry: in.Entry(id)}}, nil
}

// DecideUpdateEntry replaces an existing entry.
func DecideUpdateEntry(k Knowledge, chatbot, id uuid.UUID, in EntryInput) ([]events.Event, error) {
	if _, ok := k.Created[id.String()]; !ok {
		return nil, apperr.NotFound("knowledge entry")
	}
	return []events.Event{events.KnowledgeEntryUpdated{ChatbotID: chatbot.String(), Entry: in.Entry(id)}}, nil
}

// EntryPatch is a partial change of an entry (PATCH): the fields it carries replace the
// entry's, the others stay as they are.
type EntryPatch struct {
	Question *string   `json:"question"`
	Answer   *string   `json:"answer"`
	Tags     *[]string `json:"tags"`
}

// DecidePatchEntry merges p into the entry as it is, checks the result, and updates the
// entry to it; it returns the merged entry.
func DecidePatchEntry(k Knowledge, chatbot, id uuid.UUID, p EntryPatch) (EntryInput, []events.Event, error) {
	cur, ok := k.Contents[id.String()]
	if _, created := k.Created[id.String()]; !ok || !created {
		return EntryInput{}, nil, apperr.NotFound("knowledge entry")
	}
	in := EntryInput{Question: cur.Question, Answer: cur.Answer, Tags: cur.Tags}
	if p.Question != nil {
		in.Question = *p.Question
	}
	if p.Answer != nil {
		in.Answer = *p.Answer
	}
	if p.Tags != nil {
		in.Tags = *p.Tags
	}
	f := apperr.Fields{}
	in.Check(f, "")
	if err := f.Err(); err != nil {
		return EntryInput{}, nil, err
	}
	evs, err := DecideUpdateEntry(k, chatbot, id, in)
	return in, evs, err
}

// DecideRemoveEntry removes an existing entry.
func DecideRemoveEntry(k Knowledge, chatbot, id uuid.UUID) ([]events.Event, error) {
	if _, ok := k.Created[id.String()]; !ok {
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
		rows[i].Check(f, fmt.Sprintf("entries[%d].", i))
	}
	return f.Err()
}
