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
	"github.com/chatbotsaas/chatbotd/internal/rbac"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
)

// IfMatch is an optional expected version from the If-Match header.
type IfMatch *int

func expected(ifMatch IfMatch, loaded int) (int, error) {
	if ifMatch == nil {
		return loaded, nil
	}
	if *ifMatch != loaded {
		return 0, apperr.Conflict("If-Match is stale: the resource has changed")
	}
	return *ifMatch, nil
}

func actor(p auth.Principal, meta events.Meta) events.Meta {
	meta.Actor = events.Actor{Type: events.ActorUser, ID: &p.UserID}
	return meta
}

// CreateUser adds a user to the caller's organization.
func (s *Service) CreateUser(ctx context.Context, meta events.Meta, p auth.Principal, c domain.CreateUser) (Result[readmodel.User], error) {
	var res Result[readmodel.User]
	if err := p.Require(rbac.UsersWrite); err != nil {
		return res, err
	}
	if err := c.Validate(); err != nil {
		return res, err
	}
	perms, known, err := s.rolePermissions(ctx, p.OrganizationID, c.Role)
	if err != nil {
		return res, err
	}
	if !known {
		return res, apperr.Invalid("role", "does not exist")
	}
	if !canGrant(p, perms) {
		return res, apperr.Invalid("role", "you cannot grant a role with permissions you do not hold")
	}
	evs, err := domain.DecideCreateUser(domain.User{}, c)
	if err != nil {
		return res, err
	}
	hash, err := s.hasher.Hash(ctx, c.Password)
	if err != nil {
		return res, err
	}
	id := uuid.Must(uuid.NewV7())
	res.Token, err = s.store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamUser, StreamID: id,
		ExpectedVersion: 0, OrganizationID: &p.OrganizationID, Events: evs, Meta: actor(p, meta),
		Also: func(ctx context.Context, tx pgx.Tx) error {
			if err := reserveEmail(ctx, tx, c.Email, id); err != nil {
				return err
			}
			if err := assignRole(ctx, tx, p.OrganizationID, id, c.Role, true); err != nil {
				return err
			}
			return addCredentials(ctx, tx, id, p.OrganizationID, hash)
		}})
	if err != nil {
		return res, err
	}
	res.Data = userView(id, fold(loaded[domain.User]{OrganizationID: p.OrganizationID}, domain.EvolveUser, evs, res.Token.OccurredAt))
	return res, nil
}

// changeUser runs a command on a live user of the caller's organization; acting on an
// owner needs what granting the owner role needs (CheckActOnUser).
func (s *Service) changeUser(ctx context.Context, meta events.Meta, p auth.Principal, id uuid.UUID, ifMatch IfMatch,
	decide func(domain.User) ([]events.Event, error), also func(domain.User) func(context.Context, pgx.Tx) error,
) (Result[readmodel.User], error) {
	l, tok, err := change[domain.User]{streamType: events.StreamUser, id: id, org: p.OrganizationID, notFound: "user",
		ifMatch: ifMatch, meta: actor(p, meta), evolve: domain.EvolveUser, also: also,
		decide: func(u domain.User) ([]events.Event, error) {
			if !u.Live() {
				return nil, apperr.NotFound("user")
			}
			if err := domain.CheckActOnUser(p.UserID, id, canGrant(p, rbac.BuiltinRoles()[rbac.RoleOwner]), u); err != nil {
				return nil, err
			}
			return decide(u)
		}}.run(ctx, s.store)
	if err != nil {
		return Result[readmodel.User]{}, err
	}
	// Status and roles are authentication state; any change of the user forgets it (a
	// name, an email or a password change costs one reload of one user).
	s.forgetUser(nil, id)
	return Result[readmodel.User]{Data: userView(id, l), Token: tok}, nil
}

// UpdateUser changes a user's name, email or status.
func (s *Service) UpdateUser(ctx context.Context, meta events.Meta, p auth.Principal, id uuid.UUID, ifMatch IfMatch, c domain.UpdateUser) (Result[readmodel.User], error) {
	if err := p.Require(rbac.UsersWrite); err != nil {
		return Result[readmodel.User]{}, err
	}
	if err := c.Validate(); err != nil {
		return Result[readmodel.User]{}, err
	}
	c.Actor = p.UserID
	return s.changeUser(ctx, meta, p, id, ifMatch,
		func(u domain.User) ([]events.Event, error) { return domain.DecideUpdateUser(id, u, c) },
		func(u domain.User) func(context.Context, pgx.Tx) error {
			return func(ctx context.Context, tx pgx.Tx) error {
				if c.Email != nil && *c.Email != u.Email {
					if err := releaseEmail(ctx, tx, id); err != nil {
						return err
					}
					if err := reserveEmail(ctx, tx, *c.Email, id); err != nil {
						return err
					}
				}
				if c.Status != nil && *c.Status != u.Status {
					active := *c.Status == domain.StatusActive
					if !active && slices.Contains(u.Roles, rbac.RoleOwner) {
						if err := keepAnOwner(ctx, tx, p.OrganizationID, id, "status"); err != nil {
							return err
						}
					}
					if _, err := tx.Exec(ctx, `UPDATE role_assignments SET active = $2 WHERE user_id = $1`, id, active); err != nil {
						return err
					}
					_, err := tx.Exec(ctx, `UPDATE user_credentials SET active = $2 WHERE user_id = $1`, id, active)
					return err
				}
				return nil
			}
		})
}

// DeleteUser soft-deletes a user: the email is free again and the history stays.
func (s *Service) DeleteUser(ctx context.Context, meta events.Meta, p auth.Principal, id uuid.UUID, ifMatch IfMatch) (Result[readmodel.User], error) {
	if err := p.Require(rbac.UsersWrite); err != nil {
		return Result[readmodel.User]{}, err
	}
	return s.changeUser(ctx, meta, p, id, ifMatch,
		func(u domain.User) ([]events.Event, error) { return domain.DecideDeleteUser(id, u, p.UserID) },
		func(u domain.User) func(context.Context, pgx.Tx) error {
			return func(ctx context.Context, tx pgx.Tx) error {
				if slices.Contains(u.Roles, rbac.RoleOwner) && u.Status == domain.StatusActive {
					if err := keepAnOwner(ctx, tx, p.OrganizationID, id, "id"); err != nil {
						return err
					}
				}
				if err := releaseEmail(ctx, tx, id); err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, `DELETE FROM role_assignments WHERE user_id = $1`, id); err != nil {
					return err
				}
				// A deleted user's API tokens die with them.
				if _, err := tx.Exec(ctx, `DELETE FROM api_token_credentials WHERE user_id = $1`, id); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, `DELETE FROM user_credentials WHERE user_id = $1`, id)
				return err
			}
		})
}

// AssignRole gives a user a role (built-in or custom) the caller could grant.
func (s *Service) AssignRole(ctx context.Context, meta events.Meta, p auth.Principal, id uuid.UUID, role string) (Result[readmodel.User], error) {
	if err := s.canManageRole(ctx, p, role); err != nil {
		return Result[readmodel.User]{}, err
	}
	return s.changeUser(ctx, meta, p, id, nil,
		func(u domain.User) ([]events.Event, error) { return domain.DecideAssignRole(u, role, true) },
		func(u domain.User) func(context.Context, pgx.Tx) error {
			return func(ctx context.Context, tx pgx.Tx) error {
				return assignRole(ctx, tx, p.OrganizationID, id, role, u.Status == domain.StatusActive)
			}
		})
}

// RemoveRole takes a role from a user; the organization keeps at least one active owner.
func (s *Service) RemoveRole(ctx context.Context, meta events.Meta, p auth.Principal, id uuid.UUID, role string) (Result[readmodel.User], error) {
	if err := s.canManageRole(ctx, p, role); err != nil {
		return Result[readmodel.User]{}, err
	}
	return s.changeUser(ctx, meta, p, id, nil,
		func(u domain.User) ([]events.Event, error) { return domain.DecideRemoveRole(u, role) },
		func(u domain.User) func(context.Context, pgx.Tx) error {
			return func(ctx context.Context, tx pgx.Tx) error {
				if role == rbac.RoleOwner && u.Status == domain.StatusActive {
					if err := keepAnOwner(ctx, tx, p.OrganizationID, id, "role"); err != nil {
						return err
					}
				}
				_, err := tx.Exec(ctx, `DELETE FROM role_assignments WHERE user_id = $1 AND role = $2`, id, role)
				return err
			}
		})
}

func (s *Service) canManageRole(ctx context.Context, p auth.Principal, role string) error {
	if err := p.Require(rbac.UsersWrite); err != nil {
		return err
	}
	perms, known, err := s.rolePermissions(ctx, p.OrganizationID, role)
	if err != nil {
		return err
	}
	if !known {
		return apperr.NotFound("role")
	}
	if !canGrant(p, perms) {
		return apperr.New(apperr.CodeForbidden, "You cannot grant or remove a role with permissions you do not hold")
	}
	return nil
}

// canGrant: nobody grants (or takes) a permission they do not hold.
func canGrant(p auth.Principal, perms []string) bool {
	for _, perm := range perms {
		if !p.Can(perm) {
			return false
		}
	}
	return true
}

// assignRole records a role assignment; a custom role's name row is share-locked so that
// the role cannot be deleted or renamed under the assignment.
func assignRole(ctx context.Context, tx pgx.Tx, org, user uuid.UUID, role string, active bool) error {
	if !rbac.IsBuiltinRole(role) {
		var ok bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM role_names WHERE organization_id = $1 AND name = $2 FOR SHARE)`,
			org, role).Scan(&ok); err != nil {
			return err
		}
		if !ok {
			return apperr.NotFound("role")
		}
	}
	_, err := tx.Exec(ctx, `INSERT INTO role_assignments (organization_id, user_id, role, active) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id, role) DO UPDATE SET active = excluded.active`, org, user, role, active)
	return err
}

// keepAnOwner refuses a change that would leave the organization without an active
// owner. Changes that can remove owners are serialized per organization, so two
// concurrent demotions cannot both pass the count.
func keepAnOwner(ctx context.Context, tx pgx.Tx, org, user uuid.UUID, field string) error {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('owners:' || $1::text, 0))`, org); err != nil {
		return err
	}
	var others int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM role_assignments
		WHERE organization_id = $1 AND role = 'owner' AND active AND user_id <> $2`, org, user).Scan(&others); err != nil {
		return err
	}
	if others == 0 {
		return apperr.Invalid(field, "the organization must keep at least one active owner")
	}
	return nil
}
