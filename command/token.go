package command

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/command/domain"
	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/auth"
	"github.com/chatbotsaas/chatbotd/internal/rbac"
)

// CreatedToken is what creating a token returns: the only time the secret is shown.
type CreatedToken struct {
	ID        uuid.UUID  `json:"id"`
	Name      string     `json:"name"`
	Abilities []string   `json:"abilities"`
	ExpiresAt *time.Time `json:"expires_at"`
	CreatedAt time.Time  `json:"created_at"`
	Token     string     `json:"token"`
}

// CreateToken makes an API token for the caller.
func (s *Service) CreateToken(ctx context.Context, meta events.Meta, p auth.Principal, c domain.CreateToken) (Result[CreatedToken], error) {
	var res Result[CreatedToken]
	if err := p.Require(rbac.TokensWrite); err != nil {
		return res, err
	}
	if err := p.RequireSession(); err != nil {
		return res, err
	}
	if err := c.Validate(s.now()); err != nil {
		return res, err
	}
	evs, err := domain.DecideCreateToken(domain.Token{}, p.UserID, p.Can, c)
	if err != nil {
		return res, err
	}
	id := uuid.Must(uuid.NewV7())
	plaintext, hash := auth.NewAPIToken(id)
	res.Token, err = s.store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamToken, StreamID: id,
		ExpectedVersion: 0, OrganizationID: &p.OrganizationID, Events: evs, Meta: actor(p, meta),
		Also: func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO api_token_credentials
				(token_id, user_id, organization_id, secret_hash, abilities, expires_at)
				VALUES ($1, $2, $3, $4, $5, $6)`, id, p.UserID, p.OrganizationID, hash, c.Abilities, c.ExpiresAt)
			return err
		}})
	if err != nil {
		return res, err
	}
	res.Data = CreatedToken{ID: id, Name: c.Name, Abilities: c.Abilities, ExpiresAt: c.ExpiresAt,
		CreatedAt: res.Token.OccurredAt, Token: plaintext}
	return res, nil
}

// RevokeToken revokes one of the caller's tokens; it stops working at once.
func (s *Service) RevokeToken(ctx context.Context, meta events.Meta, p auth.Principal, id uuid.UUID) (Result[struct{}], error) {
	if err := p.Require(rbac.TokensWrite); err != nil {
		return Result[struct{}]{}, err
	}
	if err := p.RequireSession(); err != nil {
		return Result[struct{}]{}, err
	}
	_, tok, err := change[domain.Token]{streamType: events.StreamToken, id: id, org: p.OrganizationID, notFound: "token",
		meta: actor(p, meta), evolve: domain.EvolveToken,
		decide: func(t domain.Token) ([]events.Event, error) { return domain.DecideRevokeToken(t, p.UserID) },
		also: func(domain.Token) func(context.Context, pgx.Tx) error {
			return func(ctx context.Context, tx pgx.Tx) error {
				_, err := tx.Exec(ctx, `DELETE FROM api_token_credentials WHERE token_id = $1`, id)
				return err
			}
		}}.run(ctx, s.store)
	s.forgetUser(err, p.UserID) // the token's owner: the cache keeps tokens under their owner
	return Result[struct{}]{Token: tok}, err
}
