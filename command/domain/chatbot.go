package domain

import (
	"strings"
	"unicode/utf8"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
)

// Chatbot statuses and responder types.
const (
	ChatbotDraft     = "draft"
	ChatbotPublished = "published"

	ResponderKnowledgeBase = "knowledge_base"
	ResponderWebhook       = "webhook"

	defaultFallback = "Sorry, I don't know the answer to that yet."
	maxTextLen      = 2000
)

// Chatbot is the chatbot aggregate's state.
type Chatbot struct {
	Exists          bool
	Deleted         bool
	Name            string
	Description     string
	WelcomeMessage  string
	FallbackMessage string
	Status          string
	Responder       events.Responder
}

// Live reports whether the chatbot exists and is not deleted.
func (b Chatbot) Live() bool { return b.Exists && !b.Deleted }

// EvolveChatbot applies one event.
func EvolveChatbot(b Chatbot, e events.Event) Chatbot {
	switch e := e.(type) {
	case events.ChatbotCreated:
		b = Chatbot{Exists: true, Name: e.Name, Description: e.Description, WelcomeMessage: e.WelcomeMessage,
			FallbackMessage: e.FallbackMessage, Status: ChatbotDraft, Responder: e.Responder}
	case events.ChatbotUpdated:
		for field, c := range e.Changes {
			switch field {
			case "name":
				b.Name = c.New
			case "description":
				b.Description = c.New
			case "welcome_message":
				b.WelcomeMessage = c.New
			case "fallback_message":
				b.FallbackMessage = c.New
			}
		}
		if e.Responder != nil {
			b.Responder = *e.Responder
		}
	case events.ChatbotPublished:
		b.Status = ChatbotPublished
	case events.ChatbotUnpublished:
		b.Status = ChatbotDraft
	case events.ChatbotDeleted:
		b.Deleted = true
	}
	return b
}

// ResponderInput is the responder as a client sends it; the secret is write-only.
type ResponderInput struct {
	Type   string  `json:"type"`
	URL    string  `json:"url"`
	Secret *string `json:"secret"`
}

// validate checks the shape; the URL's target is checked by the service (it resolves).
// hadSecret says whether a secret is stored already (an update may keep it).
func (r *ResponderInput) validate(f apperr.Fields, hadSecret bool) {
	switch r.Type {
	case "", ResponderKnowledgeBase:
		r.Type = ResponderKnowledgeBase
		if r.URL != "" || r.Secret != nil {
			f.Add("responder", "a knowledge_base responder takes no url or secret")
		}
	case ResponderWebhook:
		r.URL = strings.TrimSpace(r.URL)
		if r.URL == "" {
			f.Add("responder.url", "is required for a webhook responder")
		}
		switch {
		case r.Secret == nil && !hadSecret:
			f.Add("responder.secret", "is required for a webhook responder")
		case r.Secret != nil && (len(*r.Secret) < 16 || len(*r.Secret) > 256):
			f.Add("responder.secret", "must be 16 to 256 bytes")
		}
	default:
		f.Add("responder.type", "must be one of knowledge_base, webhook")
	}
}

func checkText(f apperr.Fields, field, v string) {
	if utf8.RuneCountInString(v) > maxTextLen {
		f.Add(field, "must be at most 2000 characters")
	}
}

// CreateChatbot is POST /chatbots.
type CreateChatbot struct {
	Name            string          `json:"name"`
	Description     string          `json:"description"`
	WelcomeMessage  string          `json:"welcome_message"`
	FallbackMessage string          `json:"fallback_message"`
	Responder       *ResponderInput `json:"responder"`
}

// Validate checks and normalizes the input.
func (c *CreateChatbot) Validate() error {
	f := apperr.Fields{}
	c.Name = strings.TrimSpace(c.Name)
	checkName(f, "name", c.Name)
	checkText(f, "description", c.Description)
	checkText(f, "welcome_message", c.WelcomeMessage)
	checkText(f, "fallback_message", c.FallbackMessage)
	if strings.TrimSpace(c.FallbackMessage) == "" {
		c.FallbackMessage = defaultFallback
	}
	if c.Responder == nil {
		c.Responder = &ResponderInput{}
	}
	c.Responder.validate(f, false)
	return f.Err()
}

func responderOf(r ResponderInput) events.Responder {
	if r.Type == ResponderWebhook {
		return events.Responder{Type: r.Type, URL: r.URL, SecretSet: true}
	}
	return events.Responder{Type: ResponderKnowledgeBase}
}

// DecideCreateChatbot creates a draft chatbot.
func DecideCreateChatbot(b Chatbot, c CreateChatbot) ([]events.Event, error) {
	if b.Exists {
		return nil, apperr.Conflict("the chatbot exists already")
	}
	return []events.Event{events.ChatbotCreated{Name: c.Name, Description: c.Description, WelcomeMessage: c.WelcomeMessage,
		FallbackMessage: c.FallbackMessage, Responder: responderOf(*c.Responder)}}, nil
}

// UpdateChatbot is PATCH /chatbots/{id}; nil fields stay.
type UpdateChatbot struct {
	Name            *string         `json:"name"`
	Description     *string         `json:"description"`
	WelcomeMessage  *string         `json:"welcome_message"`
	FallbackMessage *string         `json:"fallback_message"`
	Responder       *ResponderInput `json:"responder"`
}

// Validate checks the fields that are set; hadSecret is whether a secret is stored.
func (c *UpdateChatbot) Validate(hadSecret bool) error {
	f := apperr.Fields{}
	if c.Name != nil {
		*c.Name = strings.TrimSpace(*c.Name)
		checkName(f, "name", *c.Name)
	}
	for field, v := range map[string]*string{"description": c.Description, "welcome_message": c.WelcomeMessage, "fallback_message": c.FallbackMessage} {
		if v != nil {
			checkText(f, field, *v)
		}
	}
	if c.FallbackMessage != nil && strings.TrimSpace(*c.FallbackMessage) == "" {
		f.Add("fallback_message", "must not be empty")
	}
	if c.Responder != nil {
		c.Responder.validate(f, hadSecret)
	}
	return f.Err()
}

// DecideUpdateChatbot records what really changes. A new webhook secret is a change even
// when nothing else is.
func DecideUpdateChatbot(b Chatbot, c UpdateChatbot) ([]events.Event, error) {
	if !b.Live() {
		return nil, apperr.NotFound("chatbot")
	}
	changes := map[string]events.Change{}
	for field, pair := range map[string][2]*string{
		"name": {c.Name, &b.Name}, "description": {c.Description, &b.Description},
		"welcome_message": {c.WelcomeMessage, &b.WelcomeMessage}, "fallback_message": {c.FallbackMessage, &b.FallbackMessage},
	} {
		if pair[0] != nil && *pair[0] != *pair[1] {
			changes[field] = events.Change{Old: *pair[1], New: *pair[0]}
		}
	}
	var ev events.ChatbotUpdated
	if len(changes) > 0 {
		ev.Changes = changes
	}
	if c.Responder != nil {
		r := responderOf(*c.Responder)
		if r != b.Responder || c.Responder.Secret != nil {
			ev.Responder = &r
		}
	}
	if ev.Changes == nil && ev.Responder == nil {
		return nil, nil
	}
	return []events.Event{ev}, nil
}

// DecidePublishChatbot publishes (or unpublishes, publish false); no change, no event.
func DecidePublishChatbot(b Chatbot, publish bool) ([]events.Event, error) {
	if !b.Live() {
		return nil, apperr.NotFound("chatbot")
	}
	switch {
	case publish && b.Status != ChatbotPublished:
		return []events.Event{events.ChatbotPublished{}}, nil
	case !publish && b.Status == ChatbotPublished:
		return []events.Event{events.ChatbotUnpublished{}}, nil
	}
	return nil, nil
}

// DecideDeleteChatbot soft-deletes a chatbot.
func DecideDeleteChatbot(b Chatbot) ([]events.Event, error) {
	if !b.Live() {
		return nil, apperr.NotFound("chatbot")
	}
	return []events.Event{events.ChatbotDeleted{}}, nil
}
