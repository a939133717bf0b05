package command

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/command/domain"
	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/auth"
	"github.com/chatbotsaas/chatbotd/internal/db"
	"github.com/chatbotsaas/chatbotd/internal/rbac"
)

// RoleView is a role as the API shows it.
type RoleView struct {
	Name        string   `json:"name"`
	Builtin     bool     `json:"builtin"`
	Permissions []string `json:"permissions"`
}

var errBuiltinRole = apperr.New(apperr.CodeForbidden, "Built-in roles cannot be changed")

// roleID finds a custom role by name; ok is false when there is none.
func roleID(ctx context.Context, q eventstore.Querier, org uuid.UUID, name string, lock string) (uuid.UUID, bool, error) {
	var id uuid.UUID
	err := q.QueryRow(ctx, `SELECT role_id FROM role_names WHERE organization_id = $1 AND name = $2 `+lock, org, name).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return id, false, nil
	}
	return id, err == nil, err
}

// rolePermissions returns a role's permissions: built-in, or custom in the organization.
func (s *Service) rolePermissions(ctx context.Context, org uuid.UUID, name string) ([]string, bool, error) {
	if perms, ok := rbac.BuiltinRoles()[name]; ok {
		return perms, true, nil
	}
	id, ok, err := roleID(ctx, s.store.Pool(), org, name, "")
	if err != nil || !ok {
		return nil, false, db.Classify(err)
	}
	l, err := load(ctx, s.store, id, domain.EvolveRole)
	if err != nil || !l.State.Exists || l.State.Deleted {
		return nil, false, err
	}
	return l.State.Permissions, true, nil
}

// CreateRole makes a custom role in the caller's organization.
func (s *Service) CreateRole(ctx context.Context, meta events.Meta, p auth.Principal, c domain.CreateRole) (Result[RoleView], error) {
	var res Result[RoleView]
	if err := p.Require(rbac.RolesWrite); err != nil {
		return res, err
	}
	if err := c.Validate(); err != nil {
		return res, err
	}
	evs, err := domain.DecideCreateRole(domain.Role{}, p.Can, c)
	if err != nil {
		return res, err
	}
	id := uuid.Must(uuid.NewV7())
	res.Token, err = s.store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamRole, StreamID: id, ExpectedVersion: 0,
		OrganizationID: &p.OrganizationID, Events: evs, Meta: actor(p, meta),
		Also: func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO role_names (organization_id, name, role_id, permissions) VALUES ($1, $2, $3, $4)`,
				p.OrganizationID, c.Name, id, c.Permissions)
			if db.IsUniqueViolation(err, "role_names_pkey") {
				return apperr.Invalid("name", "is already taken")
			}
			return err
		}})
	res.Data = RoleView{Name: c.Name, Permissions: c.Permissions}
	return res, err
}

// changeRole loads a custom role by name and appends what decide returns.
func (s *Service) changeRole(ctx context.Context, meta events.Meta, p auth.Principal, name string, ifMatch IfMatch,
	decide func(domain.Role) ([]events.Event, error), also func(id uuid.UUID, r domain.Role) func(context.Context, pgx.Tx) error,
) (Result[RoleView], error) {
	var zero Result[RoleView]
	if err := p.Require(rbac.RolesWrite); err != nil {
		return zero, err
	}
	if rbac.IsBuiltinRole(name) {
		return zero, errBuiltinRole
	}
	id, ok, err := roleID(ctx, s.store.Pool(), p.OrganizationID, name, "")
	if err != nil {
		return zero, db.Classify(err)
	}
	if !ok {
		return zero, apperr.NotFound("role")
	}
	l, tok, err := change[domain.Role]{streamType: events.StreamRole, id: id, org: p.OrganizationID, notFound: "role",
		ifMatch: ifMatch, meta: actor(p, meta), evolve: domain.EvolveRole, decide: decide,
		also: func(r domain.Role) func(context.Context, pgx.Tx) error { return also(id, r) }}.run(ctx, s.store)
	if err != nil {
		return zero, err
	}
	return Result[RoleView]{Token: tok, Data: RoleView{Name: l.State.Name, Permissions: l.State.Permissions}}, nil
}

// holders counts the users who hold a role, locking the role's name row so that no
// assignment can slip in before the caller's transaction ends.
func holders(ctx context.Context, tx pgx.Tx, org uuid.UUID, name string) (int, error) {
	if _, err := tx.Exec(ctx, `SELECT 1 FROM role_names WHERE organization_id = $1 AND name = $2 FOR UPDATE`, org, name); err != nil {
		return 0, err
	}
	var n int
	err := tx.QueryRow(ctx, `SELECT count(*) FROM role_assignments WHERE organization_id = $1 AND role = $2`, org, name).Scan(&n)
	return n, err
}

// UpdateRole renames a custom role or changes its permissions. A role that users hold
// cannot be renamed (their history names it); its permissions can change, and count on
// the holders' next request.
func (s *Service) UpdateRole(ctx context.Context, meta events.Meta, p auth.Principal, name string, ifMatch IfMatch, c domain.UpdateRole) (Result[RoleView], error) {
	if err := c.Validate(); err != nil {
		return Result[RoleView]{}, err
	}
	res, err := s.changeRole(ctx, meta, p, name, ifMatch,
		func(r domain.Role) ([]events.Event, error) { return domain.DecideUpdateRole(r, p.Can, c) },
		func(id uuid.UUID, r domain.Role) func(context.Context, pgx.Tx) error {
			return func(ctx context.Context, tx pgx.Tx) error {
				if c.Permissions != nil {
					// Authentication reads these: the change counts on the holders' next request.
					if _, err := tx.Exec(ctx, `UPDATE role_names SET permissions = $2 WHERE role_id = $1`, id, *c.Permissions); err != nil {
						return err
					}
				}
				if c.Name == nil || *c.Name == r.Name {
					return nil
				}
				n, err := holders(ctx, tx, p.OrganizationID, r.Name)
				if err != nil {
					return err
				}
				if n > 0 {
					return apperr.Invalid("name", fmt.Sprintf("cannot change while %d user(s) hold the role", n))
				}
				_, err = tx.Exec(ctx, `UPDATE role_names SET name = $3 WHERE organization_id = $1 AND role_id = $2`, p.OrganizationID, id, *c.Name)
				if db.IsUniqueViolation(err, "role_names_pkey") {
					return apperr.Invalid("name", "is already taken")
				}
				return err
			}
		})
	s.forgetOrganization(err, p.OrganizationID) // the holders' permissions
	return res, err
}

// DeleteRole deletes a custom role that nobody holds.
func (s *Service) DeleteRole(ctx context.Context, meta events.Meta, p auth.Principal, name string, ifMatch IfMatch) (Result[RoleView], error) {
	return s.changeRole(ctx, meta, p, name, ifMatch, domain.DecideDeleteRole,
		func(id uuid.UUID, r domain.Role) func(context.Context, pgx.Tx) error {
			return func(ctx context.Context, tx pgx.Tx) error {
				n, err := holders(ctx, tx, p.OrganizationID, r.Name)
				if err != nil {
					return err
				}
				if n > 0 {
					return apperr.Invalid("name", fmt.Sprintf("is held by %d user(s); remove it from them first", n))
				}
				_, err = tx.Exec(ctx, `DELETE FROM role_names WHERE role_id = $1`, id)
				return err
			}
		})
}
