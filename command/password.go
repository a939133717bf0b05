package command

import (
	"context"
	"slices"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/command/domain"
	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/auth"
	"github.com/chatbotsaas/chatbotd/internal/db"
)

// PasswordChanged is what changing one's password answers.
type PasswordChanged struct {
	// SessionsEnded is how many of the user's other live sessions the change ended.
	SessionsEnded int `json:"sessions_ended"`
}

// ReasonPasswordChanged ends a user's other sessions when their password changes.
const ReasonPasswordChanged = "password_changed"

// ChangePassword checks the caller's current password, stores the new one's hash, ends
// every other live session of the user, and records user.password_changed (which
// notifies the user by email) with a session.revoked for each ended session, in one
// transaction. Only a login session may do it. A wrong current password counts against
// the same limits as a failed login and is recorded as access.password_change_failed.
func (s *Service) ChangePassword(ctx context.Context, meta events.Meta, p auth.Principal, c domain.ChangePassword) (Result[PasswordChanged], error) {
	var res Result[PasswordChanged]
	if err := p.RequireSession(); err != nil {
		return res, err
	}
	if err := c.Validate(); err != nil {
		return res, err
	}
	user, err := load(ctx, s.store, p.UserID, domain.EvolveUser)
	if err != nil {
		return res, err
	}
	if !user.State.Live() || user.OrganizationID != p.OrganizationID {
		return res, apperr.NotFound("user")
	}
	email, ip := user.State.Email, meta.Metadata.IPAddress
	if retry, blocked := s.throttle.Blocked(ctx, ip, email, ""); blocked {
		return res, tooManyFailures(retry, "wrong passwords")
	}
	var current string
	if err := s.store.Pool().QueryRow(ctx, `SELECT password_hash FROM user_credentials WHERE user_id = $1`, p.UserID).Scan(&current); err != nil {
		return res, db.Classify(err)
	}
	ok, err := s.hasher.Verify(ctx, current, c.CurrentPassword)
	if err != nil {
		return res, err
	}
	if !ok {
		s.throttle.Failed(ctx, ip, email, "")
		if err := s.recordAccess(ctx, meta, p, events.PasswordChangeFailed{UserID: p.UserID.String(),
			Credential: p.Credential, Reason: "wrong_current_password"}); err != nil {
			return res, err
		}
		return res, apperr.Invalid("current_password", "is not your current password")
	}
	hash, err := s.hasher.Hash(ctx, c.Password)
	if err != nil {
		return res, err
	}
	first := &user // the first attempt decides on the user loaded above; a retry loads it again
	res, err = retryOnConflict(false, func() (Result[PasswordChanged], error) {
		u := first
		first = nil
		return s.changePassword(ctx, meta, p, u, current, hash)
	})
	s.forgetUser(err, p.UserID)
	return res, err
}

// changePassword is one attempt: it decides the end of the other live sessions it finds,
// and appends that with the change (to user, or to the user loaded again when nil). Its transaction locks the credentials row (which new
// logins share-lock, see startSession) and then looks at the sessions again: one started
// in between is a conflict, and the attempt is made again.
func (s *Service) changePassword(ctx context.Context, meta events.Meta, p auth.Principal, user *loaded[domain.User],
	oldHash, newHash string) (Result[PasswordChanged], error) {
	var res Result[PasswordChanged]
	if user == nil {
		l, err := load(ctx, s.store, p.UserID, domain.EvolveUser)
		if err != nil {
			return res, err
		}
		if !l.State.Live() || l.OrganizationID != p.OrganizationID {
			return res, apperr.NotFound("user")
		}
		user = &l
	}
	others, err := liveSessions(ctx, s.store.Pool(), p.UserID, p.SessionID)
	if err != nil {
		return res, err
	}
	var ended []uuid.UUID
	var more []eventstore.AppendRequest
	for _, id := range others {
		l, err := load(ctx, s.store, id, domain.EvolveSession)
		if err != nil {
			return res, err
		}
		if l.State.UserID != p.UserID || s.now().After(l.State.ExpiresAt) {
			continue // expired: its tokens are dead already
		}
		evs, err := domain.DecideRevokeSession(l.State, ReasonPasswordChanged)
		if err != nil || len(evs) == 0 {
			continue
		}
		ended = append(ended, id)
		more = append(more, eventstore.AppendRequest{StreamType: events.StreamSession, StreamID: id,
			ExpectedVersion: l.Version, OrganizationID: &p.OrganizationID, Events: evs})
	}
	res.Token, err = s.store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamUser, StreamID: p.UserID,
		ExpectedVersion: user.Version, OrganizationID: &p.OrganizationID, Meta: actor(p, meta),
		Events: []events.Event{events.UserPasswordChanged{}}, More: more,
		Also: func(ctx context.Context, tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, `UPDATE user_credentials SET password_hash = $3 WHERE user_id = $1 AND password_hash = $2`,
				p.UserID, oldHash, newHash)
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 0 {
				return apperr.Invalid("current_password", "is not your current password")
			}
			now, err := liveSessions(ctx, tx, p.UserID, p.SessionID)
			if err != nil {
				return err
			}
			if slices.ContainsFunc(now, func(id uuid.UUID) bool { return !slices.Contains(others, id) }) {
				return apperr.Conflict("a session started during the password change")
			}
			_, err = tx.Exec(ctx, `UPDATE session_credentials SET revoked = true WHERE session_id = ANY($1)`, ended)
			return err
		}})
	res.Data.SessionsEnded = len(ended)
	return res, err
}

// liveSessions lists the user's sessions that are not revoked, but the one given.
func liveSessions(ctx context.Context, q eventstore.Querier, user, but uuid.UUID) ([]uuid.UUID, error) {
	rows, err := q.Query(ctx, `SELECT session_id FROM session_credentials
		WHERE user_id = $1 AND NOT revoked AND session_id <> $2 ORDER BY session_id`, user, but)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
}
