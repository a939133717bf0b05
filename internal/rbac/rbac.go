// Package rbac is the permission catalog and the built-in roles of the API contract:
// names and sets only, no infrastructure, so that the domain's decisions can use them.
package rbac

import (
	"slices"
	"sort"
)

// Permission names are part of the API contract.
const (
	UsersRead          = "users.read"
	UsersWrite         = "users.write"
	RolesRead          = "roles.read"
	RolesWrite         = "roles.write"
	OrganizationWrite  = "organization.write"
	ChatbotsRead       = "chatbots.read"
	ChatbotsWrite      = "chatbots.write"
	ConversationsRead  = "conversations.read"
	ConversationsWrite = "conversations.write"
	AuditRead          = "audit.read"
	AnalyticsRead      = "analytics.read"
	WebhooksRead       = "webhooks.read"
	WebhooksWrite      = "webhooks.write"
	TokensWrite        = "tokens.write"
)

// Route access levels that are not permissions.
const (
	// Public routes take no credentials.
	Public = "public"
	// Authenticated routes take any valid credentials and check nothing more.
	Authenticated = "authenticated"
	// PlatformOperate is held only by platform operators' login sessions: it is no
	// permission of any role or token, and it is the only access across organizations.
	PlatformOperate = "platform.operate"
)

// PermissionInfo describes a permission for GET /permissions.
type PermissionInfo struct {
	Name        string `json:"name"`
	Description string `json:"description"`
}

// Permissions is the catalog.
func Permissions() []PermissionInfo {
	return []PermissionInfo{
		{UsersRead, "List and view users"},
		{UsersWrite, "Create, update, delete users and assign roles"},
		{RolesRead, "List roles"},
		{RolesWrite, "Create, change and delete custom roles"},
		{OrganizationWrite, "Change the organization's name and slug"},
		{ChatbotsRead, "List and view chatbots and their knowledge"},
		{ChatbotsWrite, "Create, change, publish and train chatbots"},
		{ConversationsRead, "Read conversations and messages"},
		{ConversationsWrite, "Start conversations and post messages"},
		{AuditRead, "Read and export the audit trail and the event history"},
		{AnalyticsRead, "Read analytics"},
		{WebhooksRead, "List webhooks and their deliveries"},
		{WebhooksWrite, "Create and delete webhooks"},
		{TokensWrite, "Create and revoke API tokens"},
	}
}

// IsPermission reports whether name is in the catalog.
func IsPermission(name string) bool {
	return slices.ContainsFunc(Permissions(), func(p PermissionInfo) bool { return p.Name == name })
}

// Built-in roles.
const (
	RoleOwner  = "owner"
	RoleAdmin  = "admin"
	RoleMember = "member"
	RoleViewer = "viewer"
)

// BuiltinRoles maps each built-in role to its permissions, as the API contract defines them.
func BuiltinRoles() map[string][]string {
	all := make([]string, 0, 14)
	for _, p := range Permissions() {
		all = append(all, p.Name)
	}
	admin := slices.DeleteFunc(slices.Clone(all), func(p string) bool { return p == OrganizationWrite })
	return map[string][]string{
		RoleOwner: all,
		RoleAdmin: admin,
		RoleMember: {UsersRead, RolesRead, ChatbotsRead, ConversationsRead, AnalyticsRead, WebhooksRead,
			ChatbotsWrite, ConversationsWrite},
		RoleViewer: {UsersRead, ChatbotsRead, ConversationsRead, AnalyticsRead},
	}
}

// IsBuiltinRole reports whether name is a built-in role.
func IsBuiltinRole(name string) bool { _, ok := BuiltinRoles()[name]; return ok }

// PermissionsOf returns the union of the built-in roles' permissions and the given
// custom roles' permissions, sorted.
func PermissionsOf(roles []string, custom ...[]string) []string {
	builtin := BuiltinRoles()
	set := map[string]bool{}
	for _, r := range roles {
		for _, p := range builtin[r] {
			set[p] = true
		}
	}
	for _, perms := range custom {
		for _, p := range perms {
			set[p] = true
		}
	}
	out := make([]string, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}
