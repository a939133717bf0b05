package command

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/auth"
	"github.com/chatbotsaas/chatbotd/internal/db"
)

// Role is a custom role's state.
type Role struct {
	Exists      bool
	Deleted     bool
	Name        string
	Permissions []string
}

// EvolveRole applies one event.
func EvolveRole(r Role, e events.Event) Role {
	switch e := e.(type) {
	case events.RoleCreated:
		r = Role{Exists: true, Name: e.Name, Permissions: slices.Clone(e.Permissions)}
	case events.RoleUpdated:
		if e.Name != nil {
			r.Name = e.Name.New
		}
		if e.Permissions != nil {
			r.Permissions = slices.Clone(e.Permissions)
		}
	case events.RoleDeleted:
		r.Deleted = true
	}
	return r
}

var roleNamePattern = regexp.MustCompile(`^[a-z][a-z0-9_-]{1,39}$`)

func checkRoleName(f apperr.Fields, name string) {
	switch {
	case !roleNamePattern.MatchString(name):
		f.Add("name", "must be 2 to 40 lowercase letters, digits, - or _, starting with a letter")
	case auth.IsBuiltinRole(name):
		f.Add("name", "is a built-in role")
	}
}

func checkPermissions(f apperr.Fields, perms []string) []string {
	if len(perms) == 0 {
		f.Add("permissions", "must name at least one permission")
	}
	for _, p := range perms {
		if !auth.IsPermission(p) {
			f.Add("permissions", "has an unknown permission: "+p)
		}
	}
	out := slices.Clone(perms)
	slices.Sort(out)
	return slices.Compact(out)
}

// CreateRole is POST /roles.
type CreateRole struct {
	Name        string   `json:"name"`
	Permissions []string `json:"permissions"`
}

// Validate checks and normalizes the input.
func (c *CreateRole) Validate() error {
	f := apperr.Fields{}
	c.Name = strings.TrimSpace(c.Name)
	checkRoleName(f, c.Name)
	c.Permissions = checkPermissions(f, c.Permissions)
	return f.Err()
}

// UpdateRole is PATCH /roles/{name}; nil fields stay.
type UpdateRole struct {
	Name        *string   `json:"name"`
	Permissions *[]string `json:"permissions"`
}

// Validate checks and normalizes the fields that are set.
func (c *UpdateRole) Validate() error {
	f := apperr.Fields{}
	if c.Name != nil {
		*c.Name = strings.TrimSpace(*c.Name)
		checkRoleName(f, *c.Name)
	}
	if c.Permissions != nil {
		p := checkPermissions(f, *c.Permissions)
		c.Permissions = &p
	}
	return f.Err()
}

func ungrantable(caller auth.Principal, perms []string) error {
	for _, p := range perms {
		if !caller.Can(p) {
			return apperr.Invalid("permissions", "you do not hold the permission "+p)
		}
	}
	return nil
}

// DecideCreateRole makes a role; nobody creates a role with a permission they lack.
func DecideCreateRole(r Role, caller auth.Principal, c CreateRole) ([]events.Event, error) {
	if r.Exists {
		return nil, apperr.Conflict("the role exists already")
	}
	if err := ungrantable(caller, c.Permissions); err != nil {
		return nil, err
	}
	return []events.Event{events.RoleCreated{Name: c.Name, Permissions: c.Permissions}}, nil
}

// DecideUpdateRole renames a role or replaces its permissions (none changed: no event).
func DecideUpdateRole(r Role, caller auth.Principal, c UpdateRole) ([]events.Event, error) {
	if !r.Exists || r.Deleted {
		return nil, apperr.NotFound("role")
	}
	var ev events.RoleUpdated
	if c.Name != nil && *c.Name != r.Name {
		ev.Name = &events.Change{Old: r.Name, New: *c.Name}
	}
	if c.Permissions != nil && !slices.Equal(*c.Permissions, r.Permissions) {
		// Changing a role's permissions grants them to everyone who holds it.
		if err := ungrantable(caller, append(slices.Clone(*c.Permissions), r.Permissions...)); err != nil {
			return nil, err
		}
		ev.Permissions, ev.PreviousPermissions = *c.Permissions, r.Permissions
	}
	if ev.Name == nil && ev.Permissions == nil {
		return nil, nil
	}
	return []events.Event{ev}, nil
}

// DecideDeleteRole deletes a role (whether it is still held is checked with the write).
func DecideDeleteRole(r Role) ([]events.Event, error) {
	if !r.Exists || r.Deleted {
		return nil, apperr.NotFound("role")
	}
	return []events.Event{events.RoleDeleted{Name: r.Name}}, nil
}

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
	if perms, ok := auth.BuiltinRoles()[name]; ok {
		return perms, true, nil
	}
	id, ok, err := roleID(ctx, s.store.Pool(), org, name, "")
	if err != nil || !ok {
		return nil, false, db.Classify(err)
	}
	l, err := load(ctx, s.store, id, EvolveRole)
	if err != nil || !l.State.Exists || l.State.Deleted {
		return nil, false, err
	}
	return l.State.Permissions, true, nil
}

// CreateRole makes a custom role in the caller's organization.
func (s *Service) CreateRole(ctx context.Context, meta events.Meta, p auth.Principal, c CreateRole) (Result[RoleView], error) {
	var res Result[RoleView]
	if err := p.Require(auth.RolesWrite); err != nil {
		return res, err
	}
	if err := c.Validate(); err != nil {
		return res, err
	}
	evs, err := DecideCreateRole(Role{}, p, c)
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
	decide func(Role) ([]events.Event, error), also func(id uuid.UUID, r Role) func(context.Context, pgx.Tx) error,
) (Result[RoleView], error) {
	var zero Result[RoleView]
	if err := p.Require(auth.RolesWrite); err != nil {
		return zero, err
	}
	if auth.IsBuiltinRole(name) {
		return zero, errBuiltinRole
	}
	id, ok, err := roleID(ctx, s.store.Pool(), p.OrganizationID, name, "")
	if err != nil {
		return zero, db.Classify(err)
	}
	if !ok {
		return zero, apperr.NotFound("role")
	}
	l, tok, err := change[Role]{streamType: events.StreamRole, id: id, org: p.OrganizationID, notFound: "role",
		ifMatch: ifMatch, meta: actor(p, meta), evolve: EvolveRole, decide: decide,
		also: func(r Role) func(context.Context, pgx.Tx) error { return also(id, r) }}.run(ctx, s.store)
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
func (s *Service) UpdateRole(ctx context.Context, meta events.Meta, p auth.Principal, name string, ifMatch IfMatch, c UpdateRole) (Result[RoleView], error) {
	if err := c.Validate(); err != nil {
		return Result[RoleView]{}, err
	}
	res, err := s.changeRole(ctx, meta, p, name, ifMatch,
		func(r Role) ([]events.Event, error) { return DecideUpdateRole(r, p, c) },
		func(id uuid.UUID, r Role) func(context.Context, pgx.Tx) error {
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
	return s.changeRole(ctx, meta, p, name, ifMatch, DecideDeleteRole,
		func(id uuid.UUID, r Role) func(context.Context, pgx.Tx) error {
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
