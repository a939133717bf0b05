package command

import (
	"context"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/auth"
)

// Webhook subscription statuses.
const (
	WebhookActive   = "active"
	WebhookDisabled = "disabled"
	WebhookDeleted  = "deleted"

	maxWebhookPatterns = 20
	maxURLLen          = 2048
)

// Webhook is a webhook subscription's state.
type Webhook struct {
	Exists bool
	Status string
	URL    string
	Events []string
}

// EvolveWebhook applies one event.
func EvolveWebhook(w Webhook, e events.Event) Webhook {
	switch e := e.(type) {
	case events.WebhookCreated:
		w = Webhook{Exists: true, Status: WebhookActive, URL: e.URL, Events: e.Events}
	case events.WebhookDisabled:
		if w.Status == WebhookActive {
			w.Status = WebhookDisabled
		}
	case events.WebhookDeleted:
		w.Status = WebhookDeleted
	}
	return w
}

// CreateWebhook is POST /webhooks.
type CreateWebhook struct {
	URL    string   `json:"url"`
	Events []string `json:"events"`
	// Secret signs the deliveries; when left out, one is generated and shown once.
	Secret *string `json:"secret"`
}

// Validate checks the input: an http(s) URL, 1 to 20 topic patterns over event types,
// and a secret of 16 to 256 bytes when one is given.
func (c *CreateWebhook) Validate() error {
	f := apperr.Fields{}
	c.URL = strings.TrimSpace(c.URL)
	if u, err := url.Parse(c.URL); c.URL == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		f.Add("url", "must be an http or https URL")
	} else if len(c.URL) > maxURLLen {
		f.Add("url", "must be at most 2048 characters")
	}
	switch {
	case len(c.Events) == 0:
		f.Add("events", `must name at least one event type or pattern, e.g. "conversation.*"`)
	case len(c.Events) > maxWebhookPatterns:
		f.Add("events", "must have at most 20 patterns")
	}
	for _, p := range c.Events {
		if err := events.CheckTopicPattern(p); err != nil {
			f.Add("events", err.Error())
		}
	}
	slices.Sort(c.Events)
	c.Events = slices.Compact(c.Events)
	if c.Secret != nil && (len(*c.Secret) < 16 || len(*c.Secret) > 256) {
		f.Add("secret", "must be 16 to 256 bytes")
	}
	return f.Err()
}

// DecideCreateWebhook subscribes.
func DecideCreateWebhook(w Webhook, c CreateWebhook) ([]events.Event, error) {
	if w.Exists {
		return nil, apperr.Conflict("the webhook exists already")
	}
	return []events.Event{events.WebhookCreated{URL: c.URL, Events: c.Events}}, nil
}

// DecideDeleteWebhook unsubscribes; a disabled subscription can be deleted too.
func DecideDeleteWebhook(w Webhook) ([]events.Event, error) {
	if !w.Exists || w.Status == WebhookDeleted {
		return nil, apperr.NotFound("webhook")
	}
	return []events.Event{events.WebhookDeleted{}}, nil
}

// WebhookView is a webhook subscription as the API shows it. Secret is set only in the
// answer to its creation, and only when the server generated it.
type WebhookView struct {
	ID        uuid.UUID `json:"id"`
	URL       string    `json:"url"`
	Events    []string  `json:"events"`
	Status    string    `json:"status"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	Secret    string    `json:"secret,omitempty"`
}

// CreateWebhook subscribes a URL of the caller's organization to event types.
func (s *Service) CreateWebhook(ctx context.Context, meta events.Meta, p auth.Principal, c CreateWebhook) (Result[WebhookView], error) {
	var res Result[WebhookView]
	if err := p.Require(auth.WebhooksWrite); err != nil {
		return res, err
	}
	if err := c.Validate(); err != nil {
		return res, err
	}
	// The same SSRF guard as the webhook responder: here, and again when connecting.
	if err := s.guard.CheckURL(ctx, c.URL); err != nil {
		return res, apperr.Invalid("url", err.Error())
	}
	evs, err := DecideCreateWebhook(Webhook{}, c)
	if err != nil {
		return res, err
	}
	id := uuid.Must(uuid.NewV7())
	secret, generated := "", c.Secret == nil
	if generated {
		secret = "whsec_" + randomHex(24)
	} else {
		secret = *c.Secret
	}
	sealed := s.box.Seal([]byte(secret), id[:])
	res.Token, err = s.store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamWebhook, StreamID: id, ExpectedVersion: 0,
		OrganizationID: &p.OrganizationID, Events: evs, Meta: actor(p, meta),
		Also: func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO webhook_secrets (webhook_id, sealed) VALUES ($1, $2)`, id, sealed)
			return err
		}})
	if err != nil {
		return res, err
	}
	res.Data = WebhookView{ID: id, URL: c.URL, Events: c.Events, Status: WebhookActive,
		CreatedAt: res.Token.OccurredAt, UpdatedAt: res.Token.OccurredAt}
	if generated {
		res.Data.Secret = secret
	}
	return res, nil
}

// DeleteWebhook deletes a subscription: what is still pending for it is cancelled.
func (s *Service) DeleteWebhook(ctx context.Context, meta events.Meta, p auth.Principal, id uuid.UUID) (Result[struct{}], error) {
	if err := p.Require(auth.WebhooksWrite); err != nil {
		return Result[struct{}]{}, err
	}
	_, tok, err := change[Webhook]{streamType: events.StreamWebhook, id: id, org: p.OrganizationID, notFound: "webhook",
		meta: actor(p, meta), evolve: EvolveWebhook, decide: DecideDeleteWebhook,
		also: func(Webhook) func(context.Context, pgx.Tx) error {
			return func(ctx context.Context, tx pgx.Tx) error {
				_, err := tx.Exec(ctx, `DELETE FROM webhook_secrets WHERE webhook_id = $1`, id)
				return err
			}
		}}.run(ctx, s.store)
	return Result[struct{}]{Token: tok}, err
}
