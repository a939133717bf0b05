package domain

import (
	"time"

	"github.com/google/uuid"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
)

// Session is a login session's state. Its refresh token's generation goes up by one at
// every refresh; presenting an older generation means the token was copied.
type Session struct {
	Exists     bool
	UserID     uuid.UUID
	Generation int
	Revoked    bool
	ExpiresAt  time.Time
}

// Revocation reasons.
const (
	ReasonLogout = "logout"
	ReasonReuse  = "refresh_token_reuse"
)

// EvolveSession applies one event.
func EvolveSession(s Session, e events.Event) Session {
	switch e := e.(type) {
	case events.SessionStarted:
		uid, _ := uuid.Parse(e.UserID)
		exp, _ := time.Parse(time.RFC3339, e.ExpiresAt)
		s = Session{Exists: true, UserID: uid, Generation: 1, ExpiresAt: exp}
	case events.SessionRefreshed:
		s.Generation = e.Generation
		s.ExpiresAt, _ = time.Parse(time.RFC3339, e.ExpiresAt)
	case events.SessionRevoked:
		s.Revoked = true
	}
	return s
}

// DecideStartSession starts a session that does not exist yet.
func DecideStartSession(s Session, user uuid.UUID, expires time.Time) ([]events.Event, error) {
	if s.Exists {
		return nil, apperr.Conflict("the session exists already")
	}
	return []events.Event{events.SessionStarted{UserID: user.String(), ExpiresAt: expires.UTC().Format(time.RFC3339)}}, nil
}

var ErrBadRefresh = apperr.New(apperr.CodeUnauthenticated, "The refresh token is invalid, expired or revoked")

// DecideRefreshSession rotates the refresh token. A presented generation older than the
// current one is reuse: the returned events revoke the session and must be appended even
// though the refresh itself is refused with the returned error.
func DecideRefreshSession(s Session, presented int, now, expires time.Time) ([]events.Event, error) {
	switch {
	case !s.Exists || s.Revoked || now.After(s.ExpiresAt) || presented > s.Generation:
		return nil, ErrBadRefresh
	case presented < s.Generation:
		return []events.Event{
			events.SessionReuseDetected{PresentedGeneration: presented, CurrentGeneration: s.Generation},
			events.SessionRevoked{Reason: ReasonReuse},
		}, ErrBadRefresh
	}
	return []events.Event{events.SessionRefreshed{Generation: s.Generation + 1, ExpiresAt: expires.UTC().Format(time.RFC3339)}}, nil
}

// DecideRevokeSession ends a session; an ended one stays ended (no event).
func DecideRevokeSession(s Session, reason string) ([]events.Event, error) {
	if !s.Exists {
		return nil, ErrBadRefresh
	}
	if s.Revoked {
		return nil, nil
	}
	return []events.Event{events.SessionRevoked{Reason: reason}}, nil
}

// Login is POST /auth/login.
type Login struct {
	Email    string `json:"email"`
	Password string `json:"password"`
	// DeviceToken is what an earlier successful login from this client returned (also
	// read from the device cookie): with it, other people's failures never block it.
	DeviceToken string `json:"device_token,omitempty"`
}

// Validate checks the input's presence (not its format: a bad login is a 401 like any).
func (c *Login) Validate() error {
	f := apperr.Fields{}
	c.Email = NormalizeEmail(c.Email)
	if c.Email == "" {
		f.Add("email", "is required")
	}
	if c.Password == "" {
		f.Add("password", "is required")
	}
	return f.Err()
}

// Refresh is POST /auth/refresh.
type Refresh struct {
	RefreshToken string `json:"refresh_token"`
}
