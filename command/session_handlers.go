package command

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/command/domain"
	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/auth"
	"github.com/chatbotsaas/chatbotd/internal/db"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
)

// setSession records a session's state for authentication.
func setSession(ctx context.Context, tx pgx.Tx, session, user uuid.UUID, revoked bool) error {
	_, err := tx.Exec(ctx, `INSERT INTO session_credentials (session_id, user_id, revoked) VALUES ($1, $2, $3)
		ON CONFLICT (session_id) DO UPDATE SET revoked = excluded.revoked`, session, user, revoked)
	return err
}

// TokenPair is what login and refresh return.
type TokenPair struct {
	AccessToken  string          `json:"access_token"`
	RefreshToken string          `json:"refresh_token"`
	TokenType    string          `json:"token_type"`
	ExpiresIn    int             `json:"expires_in"`
	User         *readmodel.User `json:"user,omitempty"`
	// DeviceToken (login only) marks this client as one that logged in successfully as
	// the user: sent with later logins, it exempts them from the per-email limit.
	DeviceToken string `json:"device_token,omitempty"`
}

var errBadLogin = apperr.New(apperr.CodeUnauthenticated, "Invalid email or password")

// loginNamespace derives a login stream per email address.
var loginNamespace = uuid.MustParse("6f1d3e0a-8a43-4a47-9a0d-5d7c1e0b9f21")

// Login checks the password and starts a session. Every failure is the same 401 to the
// client and a login.failed event with the reason for auditors.
func (s *Service) Login(ctx context.Context, meta events.Meta, c domain.Login) (Result[TokenPair], error) {
	var res Result[TokenPair]
	if err := c.Validate(); err != nil {
		return res, err
	}
	meta.Actor = events.Actor{Type: events.ActorAnonymous}
	ip := meta.Metadata.IPAddress
	device, _ := s.devices.Check(c.DeviceToken, c.Email)
	if retry, blocked := s.throttle.Blocked(ctx, ip, c.Email, device); blocked {
		secs := int(math.Ceil(retry.Seconds()))
		if s.throttle.Record(ctx, c.Email) {
			if _, err := s.store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamLogin,
				StreamID: uuid.NewSHA1(loginNamespace, []byte(c.Email)), ExpectedVersion: eventstore.AnyVersion,
				Events: []events.Event{events.LoginRateLimited{Email: c.Email, RetryAfterSeconds: secs}}, Meta: meta}); err != nil {
				return res, err
			}
		}
		return res, tooManyFailures(retry, "failed logins")
	}
	var userID uuid.UUID
	var hash string
	err := s.store.Pool().QueryRow(ctx, `SELECT r.user_id, c.password_hash FROM email_reservations r
		JOIN user_credentials c ON c.user_id = r.user_id WHERE r.email = $1`, c.Email).Scan(&userID, &hash)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return res, db.Classify(err)
	}
	ok, verr := s.hasher.Verify(ctx, hash, c.Password) // runs even for an unknown email
	if verr != nil {
		return res, verr
	}
	if hash == "" {
		return res, s.loginFailed(ctx, meta, c.Email, device, nil, "unknown_email")
	}
	l, err := load(ctx, s.store, userID, domain.EvolveUser)
	if err != nil {
		return res, err
	}
	org := l.OrganizationID
	switch {
	case !l.State.Live():
		return res, s.loginFailed(ctx, meta, c.Email, device, &org, "unknown_email")
	case !ok:
		return res, s.loginFailed(ctx, meta, c.Email, device, &org, "bad_password")
	case l.State.Status != domain.StatusActive:
		return res, s.loginFailed(ctx, meta, c.Email, device, &org, "user_deactivated")
	}
	// Only someone who knows the password learns that the organization is suspended.
	if suspended, err := s.organizationSuspended(ctx, org); err != nil || suspended {
		if err == nil {
			err = s.loginFailed(ctx, meta, c.Email, device, &org, "organization_suspended")
			if apperr.CodeOf(err) == apperr.CodeUnauthenticated {
				err = errSuspended
			}
		}
		return res, err
	}
	meta.Actor = events.Actor{Type: events.ActorUser, ID: &userID}
	sessionID := uuid.Must(uuid.NewV7())
	evs, err := domain.DecideStartSession(domain.Session{}, userID, s.now().Add(s.refreshTTL))
	if err != nil {
		return res, err
	}
	res.Token, err = s.store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamSession, StreamID: sessionID,
		ExpectedVersion: 0, OrganizationID: &org, Events: evs, Meta: meta,
		Also: func(ctx context.Context, tx pgx.Tx) error { return startSession(ctx, tx, sessionID, userID, hash) }})
	if err != nil {
		return res, err
	}
	view := userView(userID, l)
	res.Data, err = s.pair(userID, org, sessionID, 1)
	res.Data.User = &view
	if s.devices != nil {
		res.Data.DeviceToken = s.devices.Issue(c.Email)
	}
	return res, err
}

// startSession records a new login session, unless the password it was checked against
// has changed since: the user's credentials row is share-locked and must still hold that
// hash. A password change locks the row before it ends the user's sessions, so a login
// that raced with it either ends with them or fails here.
func startSession(ctx context.Context, tx pgx.Tx, session, user uuid.UUID, checkedHash string) error {
	tag, err := tx.Exec(ctx, `INSERT INTO session_credentials (session_id, user_id, revoked)
		SELECT $1, user_id, false FROM (SELECT user_id FROM user_credentials
			WHERE user_id = $2 AND password_hash = $3 FOR SHARE) c`, session, user, checkedHash)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return errBadLogin
	}
	return nil
}

func (s *Service) loginFailed(ctx context.Context, meta events.Meta, email, device string, org *uuid.UUID, reason string) error {
	s.throttle.Failed(ctx, meta.Metadata.IPAddress, email, device)
	_, err := s.store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamLogin,
		StreamID: uuid.NewSHA1(loginNamespace, []byte(email)), ExpectedVersion: eventstore.AnyVersion, OrganizationID: org,
		Events: []events.Event{events.LoginFailed{Email: email, Reason: reason}}, Meta: meta})
	if err != nil {
		return err
	}
	return errBadLogin
}

func (s *Service) pair(user, org, session uuid.UUID, generation int) (TokenPair, error) {
	access, err := s.tokens.IssueAccess(user, org, session)
	if err != nil {
		return TokenPair{}, err
	}
	return TokenPair{AccessToken: access, RefreshToken: s.tokens.IssueRefresh(session, generation), TokenType: "Bearer",
		ExpiresIn: int(s.tokens.AccessTTL().Seconds())}, nil
}

// Refresh rotates a session's refresh token. A token presented twice revokes the session.
func (s *Service) Refresh(ctx context.Context, meta events.Meta, c domain.Refresh) (Result[TokenPair], error) {
	var res Result[TokenPair]
	if strings.TrimSpace(c.RefreshToken) == "" {
		return res, apperr.Invalid("refresh_token", "is required")
	}
	sessionID, generation, err := s.tokens.ParseRefresh(c.RefreshToken)
	if err != nil {
		return res, domain.ErrBadRefresh
	}
	return retryOnConflict(false, func() (Result[TokenPair], error) {
		var res Result[TokenPair]
		l, err := load(ctx, s.store, sessionID, domain.EvolveSession)
		if err != nil {
			return res, err
		}
		user, err := load(ctx, s.store, l.State.UserID, domain.EvolveUser)
		if err != nil {
			return res, err
		}
		org := user.OrganizationID
		// A suspended organization's sessions stay as they are, unusable until it resumes.
		if suspended, err := s.organizationSuspended(ctx, org); err != nil || suspended {
			if err == nil {
				err = errSuspended
			}
			return res, err
		}
		meta.Actor = events.Actor{Type: events.ActorUser, ID: &l.State.UserID}
		evs, refused := domain.DecideRefreshSession(l.State, generation, s.now(), s.now().Add(s.refreshTTL))
		if refused == nil && (!user.State.Live() || user.State.Status != domain.StatusActive) {
			evs, refused = []events.Event{events.SessionRevoked{Reason: "user_inactive"}}, domain.ErrBadRefresh
		}
		if len(evs) > 0 {
			res.Token, err = s.store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamSession, StreamID: sessionID,
				ExpectedVersion: l.Version, OrganizationID: &org, Events: evs, Meta: meta,
				Also: func(ctx context.Context, tx pgx.Tx) error {
					return setSession(ctx, tx, sessionID, l.State.UserID, refused != nil)
				}})
			if err != nil {
				return res, err
			}
			if refused != nil {
				s.forgetUser(nil, l.State.UserID) // the session is revoked
			}
		}
		if refused != nil {
			return res, refused
		}
		res.Data, err = s.pair(l.State.UserID, org, sessionID, generation+1)
		return res, err
	})
}

// Logout revokes the caller's session.
func (s *Service) Logout(ctx context.Context, meta events.Meta, p auth.Principal) (Result[struct{}], error) {
	if p.SessionID == uuid.Nil {
		return Result[struct{}]{}, apperr.New(apperr.CodeSessionRequired, "An API token has no session to log out of; revoke it with DELETE /api/v1/tokens/{id}")
	}
	return retryOnConflict(false, func() (Result[struct{}], error) {
		var res Result[struct{}]
		l, err := load(ctx, s.store, p.SessionID, domain.EvolveSession)
		if err != nil {
			return res, err
		}
		evs, err := domain.DecideRevokeSession(l.State, domain.ReasonLogout)
		if err != nil || len(evs) == 0 {
			return res, err
		}
		res.Token, err = s.store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamSession, StreamID: p.SessionID,
			ExpectedVersion: l.Version, OrganizationID: &p.OrganizationID, Events: evs, Meta: meta,
			Also: func(ctx context.Context, tx pgx.Tx) error { return setSession(ctx, tx, p.SessionID, p.UserID, true) }})
		s.forgetUser(err, p.UserID)
		return res, err
	})
}

// accessNamespace derives one access stream per user for their denied requests, so that
// these security events never contend with the user's own stream.
var accessNamespace = uuid.MustParse("2d0f4f0e-6a39-4c7c-9f3a-0b6f1c9d7e55")

// RecordAccessDenied appends an access.denied event for the audit trail.
func (s *Service) RecordAccessDenied(ctx context.Context, meta events.Meta, p auth.Principal, method, route, permission string) error {
	return s.recordAccess(ctx, meta, p, events.AccessDenied{UserID: p.UserID.String(), Credential: p.Credential,
		Method: method, Route: route, Permission: permission})
}

// recordAccess appends a security event of p's access stream.
func (s *Service) recordAccess(ctx context.Context, meta events.Meta, p auth.Principal, e events.Event) error {
	_, err := s.store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamAccess,
		StreamID: uuid.NewSHA1(accessNamespace, p.UserID[:]), ExpectedVersion: eventstore.AnyVersion,
		OrganizationID: &p.OrganizationID, Meta: actor(p, meta), Events: []events.Event{e}})
	return err
}

// tooManyFailures is the 429 of a throttled password check (failed logins, wrong
// current passwords), with its Retry-After.
func tooManyFailures(retry time.Duration, what string) error {
	return &apperr.Error{Code: apperr.CodeRateLimited, RetryAfter: retry,
		Message: fmt.Sprintf("Too many %s; retry in %d s", what, int(math.Ceil(retry.Seconds())))}
}
