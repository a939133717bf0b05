package command

import (
	"context"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/command/domain"
	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/auth"
	"github.com/chatbotsaas/chatbotd/internal/rbac"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
)

func chatbotView(id uuid.UUID, l loaded[domain.Chatbot]) readmodel.Chatbot {
	b := l.State
	return readmodel.Chatbot{ID: id, OrganizationID: l.OrganizationID, Name: b.Name, Description: b.Description,
		WelcomeMessage: b.WelcomeMessage, FallbackMessage: b.FallbackMessage, Status: b.Status,
		Responder: readmodel.Responder(b.Responder), CreatedAt: l.CreatedAt, UpdatedAt: l.UpdatedAt, Version: l.Version}
}

// checkTarget refuses a webhook URL whose host is not a public address.
func (s *Service) checkTarget(ctx context.Context, r *domain.ResponderInput) error {
	if r == nil || r.Type != domain.ResponderWebhook {
		return nil
	}
	if err := s.guard.CheckURL(ctx, r.URL); err != nil {
		return apperr.Invalid("responder.url", err.Error())
	}
	return nil
}

// sealSecret stores a webhook secret sealed, bound to its chatbot.
func (s *Service) sealSecret(id uuid.UUID, r *domain.ResponderInput) func(context.Context, pgx.Tx) error {
	if r == nil {
		return nil
	}
	if r.Type != domain.ResponderWebhook {
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
func (s *Service) CreateChatbot(ctx context.Context, meta events.Meta, p auth.Principal, c domain.CreateChatbot) (Result[readmodel.Chatbot], error) {
	var res Result[readmodel.Chatbot]
	if err := p.Require(rbac.ChatbotsWrite); err != nil {
		return res, err
	}
	if err := c.Validate(); err != nil {
		return res, err
	}
	if err := s.checkTarget(ctx, c.Responder); err != nil {
		return res, err
	}
	evs, err := domain.DecideCreateChatbot(domain.Chatbot{}, c)
	if err != nil {
		return res, err
	}
	id := uuid.Must(uuid.NewV7())
	// A new chatbot has no secret to remove: only a webhook responder's is written, so a
	// knowledge-base chatbot is a plain append (one statement, and group commit).
	var also func(context.Context, pgx.Tx) error
	if c.Responder.Type == domain.ResponderWebhook {
		also = s.sealSecret(id, c.Responder)
	}
	res.Token, err = s.store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamChatbot, StreamID: id, ExpectedVersion: 0,
		OrganizationID: &p.OrganizationID, Events: evs, Meta: actor(p, meta), Also: also})
	if err != nil {
		return res, err
	}
	res.Data = chatbotView(id, fold(loaded[domain.Chatbot]{OrganizationID: p.OrganizationID}, domain.EvolveChatbot, evs, res.Token.OccurredAt))
	return res, nil
}

// changeChatbot runs a command on a live chatbot of the caller's organization.
func (s *Service) changeChatbot(ctx context.Context, meta events.Meta, p auth.Principal, id uuid.UUID, ifMatch IfMatch,
	decide func(domain.Chatbot) ([]events.Event, error), also func(domain.Chatbot) func(context.Context, pgx.Tx) error,
) (Result[readmodel.Chatbot], error) {
	if err := p.Require(rbac.ChatbotsWrite); err != nil {
		return Result[readmodel.Chatbot]{}, err
	}
	l, tok, err := change[domain.Chatbot]{streamType: events.StreamChatbot, id: id, org: p.OrganizationID, notFound: "chatbot",
		ifMatch: ifMatch, meta: actor(p, meta), evolve: domain.EvolveChatbot, decide: decide, also: also}.run(ctx, s.store)
	if err != nil {
		return Result[readmodel.Chatbot]{}, err
	}
	return Result[readmodel.Chatbot]{Data: chatbotView(id, l), Token: tok}, nil
}

// UpdateChatbot changes a chatbot's texts or responder.
func (s *Service) UpdateChatbot(ctx context.Context, meta events.Meta, p auth.Principal, id uuid.UUID, ifMatch IfMatch, c domain.UpdateChatbot) (Result[readmodel.Chatbot], error) {
	if err := s.checkTarget(ctx, c.Responder); err != nil {
		return Result[readmodel.Chatbot]{}, err
	}
	return s.changeChatbot(ctx, meta, p, id, ifMatch,
		func(b domain.Chatbot) ([]events.Event, error) {
			if !b.Live() {
				return nil, apperr.NotFound("chatbot")
			}
			// Whether a secret may be left out depends on whether one is stored.
			if err := c.Validate(b.Responder.SecretSet); err != nil {
				return nil, err
			}
			return domain.DecideUpdateChatbot(b, c)
		},
		func(domain.Chatbot) func(context.Context, pgx.Tx) error { return s.sealSecret(id, c.Responder) })
}

// PublishChatbot publishes or unpublishes a chatbot.
func (s *Service) PublishChatbot(ctx context.Context, meta events.Meta, p auth.Principal, id uuid.UUID, publish bool) (Result[readmodel.Chatbot], error) {
	return s.changeChatbot(ctx, meta, p, id, nil, func(b domain.Chatbot) ([]events.Event, error) { return domain.DecidePublishChatbot(b, publish) }, nil)
}

// DeleteChatbot soft-deletes a chatbot.
func (s *Service) DeleteChatbot(ctx context.Context, meta events.Meta, p auth.Principal, id uuid.UUID, ifMatch IfMatch) (Result[readmodel.Chatbot], error) {
	return s.changeChatbot(ctx, meta, p, id, ifMatch, domain.DecideDeleteChatbot, nil)
}
