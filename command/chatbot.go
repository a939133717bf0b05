package command

import (
	"context"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/auth"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
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

func chatbotView(id uuid.UUID, l loaded[Chatbot]) readmodel.Chatbot {
	b := l.State
	return readmodel.Chatbot{ID: id, OrganizationID: l.OrganizationID, Name: b.Name, Description: b.Description,
		WelcomeMessage: b.WelcomeMessage, FallbackMessage: b.FallbackMessage, Status: b.Status,
		Responder: readmodel.Responder(b.Responder), CreatedAt: l.CreatedAt, UpdatedAt: l.UpdatedAt, Version: l.Version}
}

// checkTarget refuses a webhook URL whose host is not a public address.
func (s *Service) checkTarget(ctx context.Context, r *ResponderInput) error {
	if r == nil || r.Type != ResponderWebhook {
		return nil
	}
	if err := s.guard.CheckURL(ctx, r.URL); err != nil {
		return apperr.Invalid("responder.url", err.Error())
	}
	return nil
}

// sealSecret stores a webhook secret sealed, bound to its chatbot.
func (s *Service) sealSecret(id uuid.UUID, r *ResponderInput) func(context.Context, pgx.Tx) error {
	if r == nil {
		return nil
	}
	if r.Type != ResponderWebhook {
		return func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `DELETE FROM chatbot_secrets WHERE chatbot_id = $1`, id)
			return err
		}
	}
	if r.Secret == nil {
		return nil
	}
	sealed := s.box.Seal([]byte(*r.Secret), id[:])
	return func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO chatbot_secrets (chatbot_id, sealed) VALUES ($1, $2)
			ON CONFLICT (chatbot_id) DO UPDATE SET sealed = excluded.sealed, updated_at = now()`, id, sealed)
		return err
	}
}

// CreateChatbot makes a draft chatbot.
func (s *Service) CreateChatbot(ctx context.Context, meta events.Meta, p auth.Principal, c CreateChatbot) (Result[readmodel.Chatbot], error) {
	var res Result[readmodel.Chatbot]
	if err := p.Require(auth.ChatbotsWrite); err != nil {
		return res, err
	}
	if err := c.Validate(); err != nil {
		return res, err
	}
	if err := s.checkTarget(ctx, c.Responder); err != nil {
		return res, err
	}
	evs, err := DecideCreateChatbot(Chatbot{}, c)
	if err != nil {
		return res, err
	}
	id := uuid.Must(uuid.NewV7())
	// A new chatbot has no secret to remove: only a webhook responder's is written, so a
	// knowledge-base chatbot is a plain append (one statement, and group commit).
	var also func(context.Context, pgx.Tx) error
	if c.Responder.Type == ResponderWebhook {
		also = s.sealSecret(id, c.Responder)
	}
	res.Token, err = s.store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamChatbot, StreamID: id, ExpectedVersion: 0,
		OrganizationID: &p.OrganizationID, Events: evs, Meta: actor(p, meta), Also: also})
	if err != nil {
		return res, err
	}
	res.Data = chatbotView(id, fold(loaded[Chatbot]{OrganizationID: p.OrganizationID}, EvolveChatbot, evs, res.Token.OccurredAt))
	return res, nil
}

// changeChatbot runs a command on a live chatbot of the caller's organization.
func (s *Service) changeChatbot(ctx context.Context, meta events.Meta, p auth.Principal, id uuid.UUID, ifMatch IfMatch,
	decide func(Chatbot) ([]events.Event, error), also func(Chatbot) func(context.Context, pgx.Tx) error,
) (Result[readmodel.Chatbot], error) {
	if err := p.Require(auth.ChatbotsWrite); err != nil {
		return Result[readmodel.Chatbot]{}, err
	}
	l, tok, err := change[Chatbot]{streamType: events.StreamChatbot, id: id, org: p.OrganizationID, notFound: "chatbot",
		ifMatch: ifMatch, meta: actor(p, meta), evolve: EvolveChatbot, decide: decide, also: also}.run(ctx, s.store)
	if err != nil {
		return Result[readmodel.Chatbot]{}, err
	}
	return Result[readmodel.Chatbot]{Data: chatbotView(id, l), Token: tok}, nil
}

// UpdateChatbot changes a chatbot's texts or responder.
func (s *Service) UpdateChatbot(ctx context.Context, meta events.Meta, p auth.Principal, id uuid.UUID, ifMatch IfMatch, c UpdateChatbot) (Result[readmodel.Chatbot], error) {
	if err := s.checkTarget(ctx, c.Responder); err != nil {
		return Result[readmodel.Chatbot]{}, err
	}
	return s.changeChatbot(ctx, meta, p, id, ifMatch,
		func(b Chatbot) ([]events.Event, error) {
			if !b.Live() {
				return nil, apperr.NotFound("chatbot")
			}
			// Whether a secret may be left out depends on whether one is stored.
			if err := c.Validate(b.Responder.SecretSet); err != nil {
				return nil, err
			}
			return DecideUpdateChatbot(b, c)
		},
		func(Chatbot) func(context.Context, pgx.Tx) error { return s.sealSecret(id, c.Responder) })
}

// PublishChatbot publishes or unpublishes a chatbot.
func (s *Service) PublishChatbot(ctx context.Context, meta events.Meta, p auth.Principal, id uuid.UUID, publish bool) (Result[readmodel.Chatbot], error) {
	return s.changeChatbot(ctx, meta, p, id, nil, func(b Chatbot) ([]events.Event, error) { return DecidePublishChatbot(b, publish) }, nil)
}

// DeleteChatbot soft-deletes a chatbot.
func (s *Service) DeleteChatbot(ctx context.Context, meta events.Meta, p auth.Principal, id uuid.UUID, ifMatch IfMatch) (Result[readmodel.Chatbot], error) {
	return s.changeChatbot(ctx, meta, p, id, ifMatch, DecideDeleteChatbot, nil)
}
