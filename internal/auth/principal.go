package auth

import (
	"slices"

	"github.com/google/uuid"

	"github.com/chatbotsaas/chatbotd/internal/apperr"
)

// Principal is who makes a request, from verified credentials only.
type Principal struct {
	// Credential names what authenticated the request ("user:<id>" for a login session,
	// "token:<id>" for an API token); rate limits count per credential.
	Credential     string
	UserID         uuid.UUID
	OrganizationID uuid.UUID
	SessionID      uuid.UUID // a login session's; nil for an API token
	TokenID        uuid.UUID // an API token's; nil for a login session
	Roles          []string
	Permissions    []string
}

// Can reports whether the principal holds the permission.
func (p Principal) Can(permission string) bool { return slices.Contains(p.Permissions, permission) }

var errSessionRequired = apperr.New(apperr.CodeSessionRequired,
	"This needs a login session: API tokens cannot change passwords, tokens or sessions")

// RequireSession is SESSION_REQUIRED unless the principal is a login session: acts on
// one's own credentials (password, tokens, sessions) are never an API token's.
func (p Principal) RequireSession() error {
	if p.SessionID == uuid.Nil {
		return errSessionRequired
	}
	return nil
}

// Require is FORBIDDEN unless the principal holds the permission.
func (p Principal) Require(permission string) error {
	if !p.Can(permission) {
		return apperr.New(apperr.CodeForbidden, "You do not have the "+permission+" permission")
	}
	return nil
}
