package command

import (
	"context"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/chatbotsaas/chatbotd/command/domain"
	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/auth"
	"github.com/chatbotsaas/chatbotd/internal/netguard"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
	"github.com/chatbotsaas/chatbotd/internal/secretbox"
)

// LoginThrottle refuses password checks (logins, password changes) for an email after
// repeated failures. device is the id of a valid device token the client presented for
// that email, or "" (see ratelimit.LoginThrottle).
type LoginThrottle interface {
	Blocked(ctx context.Context, ip, email, device string) (time.Duration, bool)
	Failed(ctx context.Context, ip, email, device string)
	// Record reports whether a refusal is worth an event (a bounded number per email).
	Record(ctx context.Context, email string) bool
}

// AuthInvalidator forgets cached authentication state. Commands that change a user's or
// an organization's (sessions, activity, roles, permissions, tokens, suspension) tell it
// after their commit, so that this process's very next request sees the change; other
// processes learn it from the database's NOTIFY (migration 00016).
type AuthInvalidator interface {
	ForgetUser(id uuid.UUID)
	ForgetOrganization(id uuid.UUID)
}

// Service handles commands: it loads the aggregate, authorizes, decides and appends.
type Service struct {
	authChanged AuthInvalidator
	store       *eventstore.Store
	hasher      *auth.Hasher
	tokens      *auth.Tokens
	throttle    LoginThrottle
	devices     *auth.Devices
	guard       netguard.Guard
	box         *secretbox.Box
	refreshTTL  time.Duration
	logger      *slog.Logger
	now         func() time.Time
}

// Deps are what the command service works with.
type Deps struct {
	Store      *eventstore.Store
	Hasher     *auth.Hasher
	Tokens     *auth.Tokens
	Throttle   LoginThrottle
	Devices    *auth.Devices  // device tokens that exempt known clients from the per-email login limit
	Guard      netguard.Guard // outgoing targets (webhook responders)
	Box        *secretbox.Box // seals webhook secrets
	RefreshTTL time.Duration
	Logger     *slog.Logger
	// AuthChanged, when set, is told of committed changes to authentication state.
	AuthChanged AuthInvalidator
}

// NewService returns the command service.
func NewService(d Deps) *Service {
	return &Service{authChanged: d.AuthChanged, store: d.Store, hasher: d.Hasher, tokens: d.Tokens, throttle: d.Throttle, devices: d.Devices, guard: d.Guard, box: d.Box,
		refreshTTL: d.RefreshTTL,
		logger:     d.Logger, now: func() time.Time { return time.Now().UTC() }}
}

// forgetUser and forgetOrganization tell the authentication cache, after a commit, whose
// state changed; err is the command's outcome (nothing committed, nothing to forget).
func (s *Service) forgetUser(err error, id uuid.UUID) {
	if err == nil && s.authChanged != nil {
		s.authChanged.ForgetUser(id)
	}
}

func (s *Service) forgetOrganization(err error, id uuid.UUID) {
	if err == nil && s.authChanged != nil {
		s.authChanged.ForgetOrganization(id)
	}
}

// Result is what a command returns: the record's view and the consistency token.
type Result[T any] struct {
	Data  T
	Token events.AppendResult
}

// conflictRetries bounds how often a command that lost a race is decided again.
const conflictRetries = 3

// retryOnConflict runs a load-decide-append step again when another request changed the
// stream in between, unless the caller pinned the version (If-Match).
func retryOnConflict[T any](pinned bool, step func() (T, error)) (T, error) {
	for attempt := 0; ; attempt++ {
		out, err := step()
		if pinned || attempt == conflictRetries || apperr.CodeOf(err) != apperr.CodeConflict {
			return out, err
		}
	}
}

func userView(id uuid.UUID, l loaded[domain.User]) readmodel.User {
	roles := l.State.Roles
	if roles == nil {
		roles = []string{}
	}
	return readmodel.User{ID: id, OrganizationID: l.OrganizationID, Name: l.State.Name, Email: l.State.Email,
		Status: l.State.Status, Roles: roles, CreatedAt: l.CreatedAt, UpdatedAt: l.UpdatedAt, Version: l.Version}
}

// fold applies newly appended events to a loaded aggregate, as load would have.
func fold[S any](l loaded[S], evolve func(S, events.Event) S, evs []events.Event, at time.Time) loaded[S] {
	for _, e := range evs {
		l.State = evolve(l.State, e)
		l.Version++
		if l.CreatedAt.IsZero() {
			l.CreatedAt = at
		}
		l.UpdatedAt = at
	}
	return l
}
