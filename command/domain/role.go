package domain

import (
	"regexp"
	"slices"
	"strings"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/rbac"
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
	case rbac.IsBuiltinRole(name):
		f.Add("name", "is a built-in role")
	}
}

func checkPermissions(f apperr.Fields, perms []string) []string {
	if len(perms) == 0 {
		f.Add("permissions", "must name at least one permission")
	}
	for _, p := range perms {
		if !rbac.IsPermission(p) {
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

// ungrantable refuses permissions the caller does not hold (holds says which they do).
func ungrantable(holds func(permission string) bool, perms []string) error {
	for _, p := range perms {
		if !holds(p) {
			return apperr.Invalid("permissions", "you do not hold the permission "+p)
		}
	}
	return nil
}

// DecideCreateRole makes a role; nobody creates a role with a permission they lack.
func DecideCreateRole(r Role, holds func(permission string) bool, c CreateRole) ([]events.Event, error) {
	if r.Exists {
		return nil, apperr.Conflict("the role exists already")
	}
	if err := ungrantable(holds, c.Permissions); err != nil {
		return nil, err
	}
	return []events.Event{events.RoleCreated{Name: c.Name, Permissions: c.Permissions}}, nil
}

// DecideUpdateRole renames a role or replaces its permissions (none changed: no event).
func DecideUpdateRole(r Role, holds func(permission string) bool, c UpdateRole) ([]events.Event, error) {
	if !r.Exists || r.Deleted {
		return nil, apperr.NotFound("role")
	}
	var ev events.RoleUpdated
	if c.Name != nil && *c.Name != r.Name {
		ev.Name = &events.Change{Old: r.Name, New: *c.Name}
	}
	if c.Permissions != nil && !slices.Equal(*c.Permissions, r.Permissions) {
		// Changing a role's permissions grants them to everyone who holds it.
		if err := ungrantable(holds, append(slices.Clone(*c.Permissions), r.Permissions...)); err != nil {
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
