package command

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/command/domain"
	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/auth"
	"github.com/chatbotsaas/chatbotd/internal/rbac"
)

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
func (s *Service) CreateWebhook(ctx context.Context, meta events.Meta, p auth.Principal, c domain.CreateWebhook) (Result[WebhookView], error) {
	var res Result[WebhookView]
	if err := p.Require(rbac.WebhooksWrite); err != nil {
		return res, err
	}
	if err := c.Validate(); err != nil {
		return res, err
	}
	// The same SSRF guard as the webhook responder: here, and again when connecting.
	if err := s.guard.CheckURL(ctx, c.URL); err != nil {
		return res, apperr.Invalid("url", err.Error())
	}
	evs, err := domain.DecideCreateWebhook(domain.Webhook{}, c)
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
	res.Data = WebhookView{ID: id, URL: c.URL, Events: c.Events, Status: domain.WebhookActive,
		CreatedAt: res.Token.OccurredAt, UpdatedAt: res.Token.OccurredAt}
	if generated {
		res.Data.Secret = secret
	}
	return res, nil
}

// DeleteWebhook deletes a subscription: what is still pending for it is cancelled.
func (s *Service) DeleteWebhook(ctx context.Context, meta events.Meta, p auth.Principal, id uuid.UUID) (Result[struct{}], error) {
	if err := p.Require(rbac.WebhooksWrite); err != nil {
		return Result[struct{}]{}, err
	}
	_, tok, err := change[domain.Webhook]{streamType: events.StreamWebhook, id: id, org: p.OrganizationID, notFound: "webhook",
		meta: actor(p, meta), evolve: domain.EvolveWebhook, decide: domain.DecideDeleteWebhook,
		also: func(domain.Webhook) func(context.Context, pgx.Tx) error {
			return func(ctx context.Context, tx pgx.Tx) error {
				_, err := tx.Exec(ctx, `DELETE FROM webhook_secrets WHERE webhook_id = $1`, id)
				return err
			}
		}}.run(ctx, s.store)
	return Result[struct{}]{Token: tok}, err
}
