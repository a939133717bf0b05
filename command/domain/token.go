package domain

import (
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/rbac"
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
		if !rbac.IsPermission(a) {
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

// DecideCreateToken makes a token for creator whose abilities the creator holds (holds
// says which permissions they do).
func DecideCreateToken(t Token, creator uuid.UUID, holds func(permission string) bool, c CreateToken) ([]events.Event, error) {
	if t.Exists {
		return nil, apperr.Conflict("the token exists already")
	}
	for _, a := range c.Abilities {
		if !holds(a) {
			return nil, apperr.Invalid("abilities", "you do not hold the permission "+a)
		}
	}
	var exp *string
	if c.ExpiresAt != nil {
		s := c.ExpiresAt.UTC().Format(time.RFC3339)
		exp = &s
	}
	return []events.Event{events.TokenCreated{UserID: creator.String(), Name: c.Name, Abilities: c.Abilities, ExpiresAt: exp}}, nil
}

// DecideRevokeToken revokes one of the caller's own tokens.
func DecideRevokeToken(t Token, caller uuid.UUID) ([]events.Event, error) {
	if !t.Exists || t.Revoked || t.UserID != caller {
		return nil, apperr.NotFound("token")
	}
	return []events.Event{events.TokenRevoked{Reason: "revoked"}}, nil
}
