package domain

import (
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/rbac"
)

// User statuses.
const (
	StatusActive      = "active"
	StatusDeactivated = "deactivated"
)

// User is the user aggregate's state.
type User struct {
	Exists  bool
	Deleted bool
	Name    string
	Email   string
	Status  string
	Roles   []string
}

// Live reports whether the user exists and is not deleted.
func (u User) Live() bool { return u.Exists && !u.Deleted }

// EvolveUser applies one event.
func EvolveUser(u User, e events.Event) User {
	switch e := e.(type) {
	case events.UserCreated:
		u = User{Exists: true, Name: e.Name, Email: e.Email, Status: e.Status, Roles: slices.Clone(e.Roles)}
	case events.UserUpdated:
		if c, ok := e.Changes["name"]; ok {
			u.Name = c.New
		}
		if c, ok := e.Changes["email"]; ok {
			u.Email = c.New
		}
	case events.UserDeactivated:
		u.Status = StatusDeactivated
	case events.UserReactivated:
		u.Status = StatusActive
	case events.UserDeleted:
		u.Deleted = true
	case events.UserRoleAssigned:
		if !slices.Contains(u.Roles, e.Role) {
			u.Roles = append(slices.Clone(u.Roles), e.Role)
		}
	case events.UserRoleRemoved:
		u.Roles = slices.DeleteFunc(slices.Clone(u.Roles), func(r string) bool { return r == e.Role })
	}
	return u
}

// CreateUser is POST /users (and the owner made by registering).
type CreateUser struct {
	Name                 string `json:"name"`
	Email                string `json:"email"`
	Password             string `json:"password"`
	PasswordConfirmation string `json:"password_confirmation"`
	Role                 string `json:"role"`
}

// Validate checks and normalizes the input.
func (c *CreateUser) Validate() error {
	f := apperr.Fields{}
	c.Name = strings.TrimSpace(c.Name)
	c.Email = NormalizeEmail(c.Email)
	checkName(f, "name", c.Name)
	checkEmail(f, "email", c.Email)
	checkPassword(f, "password", c.Password)
	if c.PasswordConfirmation != c.Password {
		f.Add("password_confirmation", "must match password")
	}
	if c.Role == "" {
		c.Role = rbac.RoleMember
	}
	if !rbac.IsBuiltinRole(c.Role) && !roleNamePattern.MatchString(c.Role) {
		f.Add("role", "must be a built-in role (owner, admin, member, viewer) or a custom role's name")
	}
	return f.Err()
}

// DecideCreateUser creates a user that does not exist yet.
func DecideCreateUser(u User, c CreateUser) ([]events.Event, error) {
	if u.Exists {
		return nil, apperr.Conflict("the user exists already")
	}
	return []events.Event{events.UserCreated{Name: c.Name, Email: c.Email, Roles: []string{c.Role}, Status: StatusActive}}, nil
}

// UpdateUser is PATCH /users/{id}; nil fields stay.
type UpdateUser struct {
	Name   *string `json:"name"`
	Email  *string `json:"email"`
	Status *string `json:"status"`
	// Actor is who asks (not from the body): nobody deactivates themselves.
	Actor uuid.UUID `json:"-"`
}

// Validate checks and normalizes the fields that are set.
func (c *UpdateUser) Validate() error {
	f := apperr.Fields{}
	if c.Name != nil {
		*c.Name = strings.TrimSpace(*c.Name)
		checkName(f, "name", *c.Name)
	}
	if c.Email != nil {
		*c.Email = NormalizeEmail(*c.Email)
		checkEmail(f, "email", *c.Email)
	}
	if c.Status != nil && *c.Status != StatusActive && *c.Status != StatusDeactivated {
		f.Add("status", "must be one of active, deactivated")
	}
	return f.Err()
}

// DecideUpdateUser records the fields that really change (none: no event).
func DecideUpdateUser(id uuid.UUID, u User, c UpdateUser) ([]events.Event, error) {
	if !u.Live() {
		return nil, apperr.NotFound("user")
	}
	var out []events.Event
	changes := map[string]events.Change{}
	if c.Name != nil && *c.Name != u.Name {
		changes["name"] = events.Change{Old: u.Name, New: *c.Name}
	}
	if c.Email != nil && *c.Email != u.Email {
		changes["email"] = events.Change{Old: u.Email, New: *c.Email}
	}
	if len(changes) > 0 {
		out = append(out, events.UserUpdated{Changes: changes})
	}
	if c.Status != nil && *c.Status != u.Status {
		if *c.Status == StatusDeactivated {
			if id == c.Actor {
				return nil, apperr.Invalid("status", "you cannot deactivate yourself")
			}
			out = append(out, events.UserDeactivated{})
		} else {
			out = append(out, events.UserReactivated{})
		}
	}
	return out, nil
}

// errOwnerProtected refuses a change of an owner by someone who could not make one.
var errOwnerProtected = apperr.New(apperr.CodeForbidden,
	"Only someone who can grant the owner role can change, deactivate or delete an owner, or change their roles")

// CheckActOnUser is the one rule for acting on another user: acting on an owner (their
// name or email, their status, deleting them, their roles) needs what granting the
// owner role needs (mayGrantOwner: every permission an owner holds). Otherwise an admin,
// who cannot make anyone an owner, could take an owner's account by changing its email.
func CheckActOnUser(actor, target uuid.UUID, mayGrantOwner bool, u User) error {
	if actor != target && slices.Contains(u.Roles, rbac.RoleOwner) && !mayGrantOwner {
		return errOwnerProtected
	}
	return nil
}

// DecideDeleteUser soft-deletes a user; nobody deletes themselves.
func DecideDeleteUser(id uuid.UUID, u User, actor uuid.UUID) ([]events.Event, error) {
	if !u.Live() {
		return nil, apperr.NotFound("user")
	}
	if id == actor {
		return nil, apperr.New(apperr.CodeForbidden, "You cannot delete your own account")
	}
	return []events.Event{events.UserDeleted{}}, nil
}

// DecideAssignRole gives a role (known: it exists in the organization); having it
// already is no change.
func DecideAssignRole(u User, role string, known bool) ([]events.Event, error) {
	if !u.Live() {
		return nil, apperr.NotFound("user")
	}
	if !known {
		return nil, apperr.NotFound("role")
	}
	if slices.Contains(u.Roles, role) {
		return nil, nil
	}
	return []events.Event{events.UserRoleAssigned{Role: role}}, nil
}

// DecideRemoveRole takes a role; not having it is no change.
func DecideRemoveRole(u User, role string) ([]events.Event, error) {
	if !u.Live() {
		return nil, apperr.NotFound("user")
	}
	if !slices.Contains(u.Roles, role) {
		return nil, nil
	}
	return []events.Event{events.UserRoleRemoved{Role: role}}, nil
}

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
