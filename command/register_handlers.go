package command

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/command/domain"
	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/db"
	"github.com/chatbotsaas/chatbotd/internal/rbac"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
)

// Registered is what registering returns.
type Registered struct {
	User         readmodel.User         `json:"user"`
	Organization readmodel.Organization `json:"organization"`
}

// Register creates an organization and its owner in one transaction.
func (s *Service) Register(ctx context.Context, meta events.Meta, c domain.Register) (Result[Registered], error) {
	var res Result[Registered]
	if err := c.Validate(); err != nil {
		return res, err
	}
	hash, err := s.hasher.Hash(ctx, c.Password)
	if err != nil {
		return res, err
	}
	orgID, userID := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	meta.Actor = events.Actor{Type: events.ActorUser, ID: &userID}
	base := domain.Slugify(c.OrganizationName)
	for attempt := 0; ; attempt++ {
		slug := base
		if attempt > 0 {
			slug = base + "-" + randomHex(3)
		}
		orgEvents, err := domain.DecideCreateOrganization(domain.Organization{}, domain.CreateOrganization{Name: c.OrganizationName, Slug: slug})
		if err != nil {
			return res, err
		}
		userEvents, err := domain.DecideCreateUser(domain.User{}, domain.CreateUser{Name: c.Name, Email: c.Email, Role: rbac.RoleOwner})
		if err != nil {
			return res, err
		}
		token, err := s.store.Append(ctx, eventstore.AppendRequest{
			StreamType: events.StreamUser, StreamID: userID, ExpectedVersion: 0, OrganizationID: &orgID,
			Events: userEvents, Meta: meta,
			More: []eventstore.AppendRequest{{StreamType: events.StreamOrganization, StreamID: orgID, ExpectedVersion: 0,
				OrganizationID: &orgID, Events: orgEvents}},
			Also: func(ctx context.Context, tx pgx.Tx) error {
				if err := reserveEmail(ctx, tx, c.Email, userID); err != nil {
					return err
				}
				if err := addCredentials(ctx, tx, userID, orgID, hash); err != nil {
					return err
				}
				if err := assignRole(ctx, tx, orgID, userID, rbac.RoleOwner, true); err != nil {
					return err
				}
				return reserveSlug(ctx, tx, slug, orgID)
			},
		})
		if errors.Is(err, errSlugTaken) && attempt < 5 {
			continue
		}
		if err != nil {
			return res, err
		}
		now := token.OccurredAt
		res.Token = token
		res.Data.User = readmodel.User{ID: userID, OrganizationID: orgID, Name: c.Name, Email: c.Email,
			Status: domain.StatusActive, Roles: []string{rbac.RoleOwner}, CreatedAt: now, UpdatedAt: now, Version: 1}
		res.Data.Organization = readmodel.Organization{ID: orgID, Name: c.OrganizationName, Slug: slug,
			Status: "active", CreatedAt: now, UpdatedAt: now, Version: 1}
		return res, nil
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

var errSlugTaken = apperr.Invalid("slug", "is already taken")

func reserveEmail(ctx context.Context, tx pgx.Tx, email string, user uuid.UUID) error {
	_, err := tx.Exec(ctx, `INSERT INTO email_reservations (email, user_id) VALUES ($1, $2)`, email, user)
	if db.IsUniqueViolation(err, "email_reservations_pkey") {
		return apperr.New(apperr.CodeEmailTaken, "This email address is already registered")
	}
	return err
}

func releaseEmail(ctx context.Context, tx pgx.Tx, user uuid.UUID) error {
	_, err := tx.Exec(ctx, `DELETE FROM email_reservations WHERE user_id = $1`, user)
	return err
}

func reserveSlug(ctx context.Context, tx pgx.Tx, slug string, org uuid.UUID) error {
	_, err := tx.Exec(ctx, `INSERT INTO organization_slugs (slug, organization_id) VALUES ($1, $2)
		ON CONFLICT (organization_id) DO UPDATE SET slug = excluded.slug`, slug, org)
	if db.IsUniqueViolation(err, "organization_slugs_pkey") {
		return errSlugTaken
	}
	return err
}

// addCredentials stores a new user's password hash; the row is also what authentication
// checks (organization, active) on every request.
func addCredentials(ctx context.Context, tx pgx.Tx, user, org uuid.UUID, hash string) error {
	_, err := tx.Exec(ctx, `INSERT INTO user_credentials (user_id, organization_id, password_hash, active)
		VALUES ($1, $2, $3, true)`, user, org, hash)
	return err
}
