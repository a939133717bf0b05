package command

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/auth"
	"github.com/chatbotsaas/chatbotd/internal/db"
)

// ChangePassword is PUT /auth/password: the caller changes their own password.
type ChangePassword struct {
	CurrentPassword      string `json:"current_password"`
	Password             string `json:"password"`
	PasswordConfirmation string `json:"password_confirmation"`
}

// Validate checks the input.
func (c *ChangePassword) Validate() error {
	f := apperr.Fields{}
	if c.CurrentPassword == "" {
		f.Add("current_password", "is required")
	}
	checkPassword(f, "password", c.Password)
	if c.PasswordConfirmation != c.Password {
		f.Add("password_confirmation", "must match password")
	}
	if c.Password != "" && c.Password == c.CurrentPassword {
		f.Add("password", "must differ from the current password")
	}
	return f.Err()
}

// ChangePassword checks the caller's current password, stores the new one's hash and
// records user.password_changed (which notifies the user by email).
func (s *Service) ChangePassword(ctx context.Context, meta events.Meta, p auth.Principal, c ChangePassword) (Result[struct{}], error) {
	if err := c.Validate(); err != nil {
		return Result[struct{}]{}, err
	}
	var current string
	if err := s.store.Pool().QueryRow(ctx, `SELECT password_hash FROM user_credentials WHERE user_id = $1`, p.UserID).Scan(&current); err != nil {
		return Result[struct{}]{}, db.Classify(err)
	}
	ok, err := s.hasher.Verify(ctx, current, c.CurrentPassword)
	if err != nil {
		return Result[struct{}]{}, err
	}
	if !ok {
		return Result[struct{}]{}, apperr.Invalid("current_password", "is not your current password")
	}
	hash, err := s.hasher.Hash(ctx, c.Password)
	if err != nil {
		return Result[struct{}]{}, err
	}
	res, err := s.changeUser(ctx, meta, p, p.UserID, nil,
		func(User) ([]events.Event, error) { return []events.Event{events.UserPasswordChanged{}}, nil },
		func(User) func(context.Context, pgx.Tx) error {
			return func(ctx context.Context, tx pgx.Tx) error {
				_, err := tx.Exec(ctx, `UPDATE user_credentials SET password_hash = $2 WHERE user_id = $1`, p.UserID, hash)
				return err
			}
		})
	return Result[struct{}]{Token: res.Token}, err
}
