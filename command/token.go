package command

import (
	"context"
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

// Token is an API token's state.
type Token struct {
	Exists  bool
	UserID  uuid.UUID
	Revoked bool
}

// EvolveToken applies one event.
func EvolveToken(t Token, e events.Event) Token {
	switch e := e.(type) {
	case events.TokenCreated:
		uid, _ := uuid.Parse(e.UserID)
		t = Token{Exists: true, UserID: uid}
	case events.TokenRevoked:
		t.Revoked = true
	}
	return t
}

// CreateToken is POST /tokens.
type CreateToken struct {
	Name      string     `json:"name"`
	Abilities []string   `json:"abilities"`
	ExpiresAt *time.Time `json:"expires_at"`
}

// Validate checks the input; abilities must be permissions of the catalog.
func (c *CreateToken) Validate(now time.Time) error {
	f := apperr.Fields{}
	c.Name = strings.TrimSpace(c.Name)
	checkName(f, "name", c.Name)
	if len(c.Abilities) == 0 {
		f.Add("abilities", "must name at least one permission")
	}
	for _, a := range c.Abilities {
		if !auth.IsPermission(a) {
			f.Add("abilities", "has an unknown permission: "+a)
		}
	}
	slices.Sort(c.Abilities)
	c.Abilities = slices.Compact(c.Abilities)
	if c.ExpiresAt != nil && !c.ExpiresAt.After(now) {
		f.Add("expires_at", "must be in the future")
	}
	return f.Err()
}

// DecideCreateToken makes a token whose abilities the creator holds.
func DecideCreateToken(t Token, creator auth.Principal, c CreateToken) ([]events.Event, error) {
	if t.Exists {
		return nil, apperr.Conflict("the token exists already")
	}
	for _, a := range c.Abilities {
		if !creator.Can(a) {
			return nil, apperr.Invalid("abilities", "you do not hold the permission "+a)
		}
	}
	var exp *string
	if c.ExpiresAt != nil {
		s := c.ExpiresAt.UTC().Format(time.RFC3339)
		exp = &s
	}
	return []events.Event{events.TokenCreated{UserID: creator.UserID.String(), Name: c.Name, Abilities: c.Abilities, ExpiresAt: exp}}, nil
}

// DecideRevokeToken revokes one of the caller's own tokens.
func DecideRevokeToken(t Token, caller uuid.UUID) ([]events.Event, error) {
	if !t.Exists || t.Revoked || t.UserID != caller {
		return nil, apperr.NotFound("token")
	}
	return []events.Event{events.TokenRevoked{Reason: "revoked"}}, nil
}

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
func (s *Service) CreateToken(ctx context.Context, meta events.Meta, p auth.Principal, c CreateToken) (Result[CreatedToken], error) {
	var res Result[CreatedToken]
	if err := p.Require(auth.TokensWrite); err != nil {
		return res, err
	}
	if err := p.RequireSession(); err != nil {
		return res, err
	}
	if err := c.Validate(s.now()); err != nil {
		return res, err
	}
	evs, err := DecideCreateToken(Token{}, p, c)
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
	if err := p.Require(auth.TokensWrite); err != nil {
		return Result[struct{}]{}, err
	}
	if err := p.RequireSession(); err != nil {
		return Result[struct{}]{}, err
	}
	_, tok, err := change[Token]{streamType: events.StreamToken, id: id, org: p.OrganizationID, notFound: "token",
		meta: actor(p, meta), evolve: EvolveToken,
		decide: func(t Token) ([]events.Event, error) { return DecideRevokeToken(t, p.UserID) },
		also: func(Token) func(context.Context, pgx.Tx) error {
			return func(ctx context.Context, tx pgx.Tx) error {
				_, err := tx.Exec(ctx, `DELETE FROM api_token_credentials WHERE token_id = $1`, id)
				return err
			}
		}}.run(ctx, s.store)
	s.forgetUser(err, p.UserID) // the token's owner: the cache keeps tokens under their owner
	return Result[struct{}]{Token: tok}, err
}
