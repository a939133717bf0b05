package command

import (
	"context"
	"errors"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/command/domain"
	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/auth"
	"github.com/chatbotsaas/chatbotd/internal/db"
	"github.com/chatbotsaas/chatbotd/internal/rbac"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
)

// Platform operators are users of one organization, the platform's, made by
// `chatbotd admin create` and never by the API. They sign in like anyone; the flag on
// their credentials gives them rbac.PlatformOperate, the only way to act across
// organizations. The platform organization cannot be suspended.

// SuspendOrganization suspends an organization: in the same transaction as the event,
// authentication's row says so, and every request of its users and tokens gets 403
// ORGANIZATION_SUSPENDED from the next one on.
func (s *Service) SuspendOrganization(ctx context.Context, meta events.Meta, p auth.Principal, id uuid.UUID, c domain.SuspendOrganization) (Result[readmodel.Organization], error) {
	if err := p.Require(rbac.PlatformOperate); err != nil {
		return Result[readmodel.Organization]{}, err
	}
	if err := c.Validate(); err != nil {
		return Result[readmodel.Organization]{}, err
	}
	return s.setSuspended(ctx, meta, p, id, true, func(o domain.Organization) ([]events.Event, error) {
		return domain.DecideSuspendOrganization(o, c.Reason)
	})
}

// ResumeOrganization is POST /admin/organizations/{id}/resume.
func (s *Service) ResumeOrganization(ctx context.Context, meta events.Meta, p auth.Principal, id uuid.UUID) (Result[readmodel.Organization], error) {
	if err := p.Require(rbac.PlatformOperate); err != nil {
		return Result[readmodel.Organization]{}, err
	}
	return s.setSuspended(ctx, meta, p, id, false, domain.DecideResumeOrganization)
}

func (s *Service) setSuspended(ctx context.Context, meta events.Meta, p auth.Principal, id uuid.UUID, suspended bool,
	decide func(domain.Organization) ([]events.Event, error)) (Result[readmodel.Organization], error) {
	// The operator acts on another organization: the stream's own organization is the
	// tenant (so the event is in that organization's audit trail), the actor the operator.
	l, tok, err := change[domain.Organization]{streamType: events.StreamOrganization, id: id, org: id, notFound: "organization",
		meta: actor(p, meta), evolve: domain.EvolveOrganization, decide: decide,
		also: func(domain.Organization) func(context.Context, pgx.Tx) error {
			return func(ctx context.Context, tx pgx.Tx) error { return setOrganizationState(ctx, tx, id, suspended, false) }
		}}.run(ctx, s.store)
	s.forgetOrganization(err, id)
	if err != nil {
		return Result[readmodel.Organization]{}, err
	}
	o := l.State
	return Result[readmodel.Organization]{Token: tok, Data: readmodel.Organization{ID: id, Name: o.Name, Slug: o.Slug,
		Status: o.Status, SuspensionReason: o.SuspensionReason, CreatedAt: l.CreatedAt, UpdatedAt: l.UpdatedAt,
		Version: l.Version}}, nil
}

// setOrganizationState writes the row authentication reads.
func setOrganizationState(ctx context.Context, tx pgx.Tx, org uuid.UUID, suspended, platform bool) error {
	_, err := tx.Exec(ctx, `INSERT INTO organization_states (organization_id, suspended, platform) VALUES ($1, $2, $3)
		ON CONFLICT (organization_id) DO UPDATE SET suspended = excluded.suspended`, org, suspended, platform)
	return err
}

// organizationSuspended reports whether an organization is suspended now.
func (s *Service) organizationSuspended(ctx context.Context, org uuid.UUID) (bool, error) {
	var suspended bool
	err := s.store.Pool().QueryRow(ctx, `SELECT suspended FROM organization_states WHERE organization_id = $1`, org).Scan(&suspended)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	return suspended, db.Classify(err)
}

var errSuspended = apperr.New(apperr.CodeOrgSuspended, "This organization is suspended; contact the platform's operators")

// CreateOperator makes a platform operator account: a user of the platform organization
// (made with the first operator) with the operator flag. Its email is reserved like any
// user's, so it cannot also belong to a tenant.
func (s *Service) CreateOperator(ctx context.Context, meta events.Meta, c domain.CreateOperator) (Result[readmodel.User], error) {
	var res Result[readmodel.User]
	if err := c.Validate(); err != nil {
		return res, err
	}
	hash, err := s.hasher.Hash(ctx, c.Password)
	if err != nil {
		return res, err
	}
	for attempt := 0; ; attempt++ {
		res, err = s.createOperator(ctx, meta, c, hash)
		// Two first operators at once: one made the platform organization, the other
		// joins it.
		if db.IsUniqueViolation(err, "organization_states_platform_key") && attempt < 3 {
			continue
		}
		return res, err
	}
}

func (s *Service) createOperator(ctx context.Context, meta events.Meta, c domain.CreateOperator, hash string) (Result[readmodel.User], error) {
	var res Result[readmodel.User]
	var orgID uuid.UUID
	err := s.store.Pool().QueryRow(ctx, `SELECT organization_id FROM organization_states WHERE platform`).Scan(&orgID)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return res, db.Classify(err)
	}
	newOrg := errors.Is(err, pgx.ErrNoRows)
	if newOrg {
		orgID = uuid.Must(uuid.NewV7())
	}
	userID := uuid.Must(uuid.NewV7())
	meta.Actor = events.Actor{Type: events.ActorSystem}
	req := eventstore.AppendRequest{StreamType: events.StreamUser, StreamID: userID, ExpectedVersion: 0, OrganizationID: &orgID,
		Events: []events.Event{events.UserCreated{Name: c.Name, Email: c.Email, Roles: []string{rbac.RoleOwner},
			Status: domain.StatusActive, PlatformOperator: true}}, Meta: meta}
	slug := "platform-operators-" + randomHex(3)
	if newOrg {
		req.More = []eventstore.AppendRequest{{StreamType: events.StreamOrganization, StreamID: orgID, ExpectedVersion: 0,
			OrganizationID: &orgID, Events: []events.Event{events.OrganizationCreated{Name: domain.PlatformOrganizationName,
				Slug: slug, Status: "active", Platform: true}}}}
	}
	req.Also = func(ctx context.Context, tx pgx.Tx) error {
		if newOrg {
			if err := setOrganizationState(ctx, tx, orgID, false, true); err != nil {
				return err
			}
			if err := reserveSlug(ctx, tx, slug, orgID); err != nil {
				return err
			}
		}
		if err := reserveEmail(ctx, tx, c.Email, userID); err != nil {
			return err
		}
		if err := addCredentials(ctx, tx, userID, orgID, hash); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE user_credentials SET platform_operator = true WHERE user_id = $1`, userID); err != nil {
			return err
		}
		return assignRole(ctx, tx, orgID, userID, rbac.RoleOwner, true)
	}
	tok, err := s.store.Append(ctx, req)
	if err != nil {
		return res, err
	}
	res.Token = tok
	res.Data = readmodel.User{ID: userID, OrganizationID: orgID, Name: c.Name, Email: c.Email, Status: domain.StatusActive,
		Roles: []string{rbac.RoleOwner}, CreatedAt: tok.OccurredAt, UpdatedAt: tok.OccurredAt, Version: 1}
	return res, nil
}
