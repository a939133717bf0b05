package query

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/mail"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/httpx"
	"github.com/chatbotsaas/chatbotd/internal/rbac"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
)

func (h *HTTP) me(c *gin.Context) {
	if !allowed(c, rbac.Authenticated) {
		return
	}
	p := principal(c)
	ctx := c.Request.Context()
	u, err := readmodel.CachedUser(ctx, h.cache, h.read, p.UserID, awaited(c, p.UserID))
	if errors.Is(err, readmodel.ErrNotFound) {
		// The caller is authenticated, so the user exists: a brand-new one may not be
		// projected yet. Wait for it as a consistency token would.
		wctx, cancel := context.WithTimeout(ctx, h.consistencyWait)
		_, err = h.applied.WaitApplied(wctx, h.read, readmodel.AccountsProjection, p.UserID, 1)
		cancel()
		if err == nil {
			u, err = readmodel.CachedUser(ctx, h.cache, h.read, p.UserID, 1)
		}
	}
	if err != nil {
		httpx.Fail(c, notFound(err, "user"))
		return
	}
	// The caller's effective permissions: a token's are its abilities as its owner holds them.
	httpx.OK(c, http.StatusOK, "Current user", Me{User: u, Permissions: p.Permissions}, nil)
}

// byID is the query of columns of the row of table whose id is $1, in the organization
// $2, where cond holds too.
//
// The id is looked up in a subquery that OFFSET 0 keeps apart from the other conditions,
// so that the primary key finds the row whatever the statistics say. Given "id = $1 AND
// organization_id = $2 AND deleted_at IS NULL" on a table never analyzed, PostgreSQL
// took the tenant's (organization_id, created_at, id) index, whose predicate is the
// query's, and read the organization's every entry in it to find one: a cost that grew
// with the tenant (BENCHMARKS.md has the figures; TestReadsByIDTakeThePrimaryKey).
func byID(table, columns, cond string) string {
	return `SELECT ` + columns + ` FROM (SELECT * FROM ` + table + ` WHERE id = $1 OFFSET 0) AS ` + table +
		` WHERE organization_id = $2 AND ` + cond
}

// inOrganization reads the record the path's id names in the caller's organization:
// query takes $1 the id and $2 the organization (byID). A missing record is NOT_FOUND
// what. It answers the failure itself and reports whether there is a record.
func inOrganization[T any](c *gin.Context, h *HTTP, what, query string, scan func(pgx.Row) (T, error)) (T, bool) {
	id, err := httpx.PathUUID(c, "id")
	if err != nil {
		httpx.Fail(c, err)
		var zero T
		return zero, false
	}
	v, err := scan(h.read.QueryRow(c.Request.Context(), query, id, principal(c).OrganizationID))
	if errors.Is(err, pgx.ErrNoRows) {
		err = apperr.NotFound(what)
	}
	if err != nil {
		httpx.Fail(c, err)
		return v, false
	}
	return v, true
}

func notFound(err error, what string) error {
	if errors.Is(err, readmodel.ErrNotFound) {
		return apperr.NotFound(what)
	}
	return err
}

func (h *HTTP) getUser(c *gin.Context) {
	if !allowed(c, rbac.UsersRead) {
		return
	}
	id, err := httpx.PathUUID(c, "id")
	if err != nil {
		httpx.Fail(c, err)
		return
	}
	u, err := readmodel.CachedUserDocument(c.Request.Context(), h.cache, h.read, id, awaited(c, id))
	if err == nil && u.OrganizationID != principal(c).OrganizationID {
		err = readmodel.ErrNotFound // another tenant's user does not exist for this caller
	}
	if err != nil {
		httpx.Fail(c, notFound(err, "user"))
		return
	}
	c.Header("ETag", strconv.Quote(strconv.Itoa(u.Version)))
	httpx.OKDocument(c, http.StatusOK, "User", u.JSON)
}

func (h *HTTP) checkEmail(c *gin.Context) {
	if !allowed(c, rbac.UsersRead) {
		return
	}
	email := strings.ToLower(strings.TrimSpace(c.Query("email")))
	if a, err := mail.ParseAddress(email); email == "" || err != nil || a.Address != email {
		httpx.Fail(c, apperr.Invalid("email", "must be a valid email address"))
		return
	}
	var exists bool
	err := h.read.QueryRow(c.Request.Context(), `SELECT EXISTS (SELECT 1 FROM users
		WHERE organization_id = $1 AND lower(email) = $2 AND deleted_at IS NULL)`,
		principal(c).OrganizationID, email).Scan(&exists)
	if err != nil {
		httpx.Fail(c, err)
		return
	}
	httpx.OK(c, http.StatusOK, "Email checked", gin.H{"email": email, "exists": exists}, nil)
}

func (h *HTTP) organization(c *gin.Context) {
	if !allowed(c, rbac.Authenticated) {
		return
	}
	o, err := readmodel.LoadOrganization(c.Request.Context(), h.read, principal(c).OrganizationID)
	if err != nil {
		httpx.Fail(c, notFound(err, "organization"))
		return
	}
	c.Header("ETag", strconv.Quote(strconv.Itoa(o.Version)))
	httpx.OK(c, http.StatusOK, "Organization", o, nil)
}

// roles lists the built-in roles, then the organization's custom roles by name.
func (h *HTTP) roles(c *gin.Context) {
	if !allowed(c, rbac.RolesRead) {
		return
	}
	var out []Role
	for name, perms := range rbac.BuiltinRoles() {
		sort.Strings(perms)
		out = append(out, Role{Name: name, Builtin: true, Permissions: perms})
	}
	order := map[string]int{rbac.RoleOwner: 0, rbac.RoleAdmin: 1, rbac.RoleMember: 2, rbac.RoleViewer: 3}
	sort.Slice(out, func(i, j int) bool { return order[out[i].Name] < order[out[j].Name] })
	custom, err := readmodel.CustomRoles(c.Request.Context(), h.read, principal(c).OrganizationID, nil)
	if err != nil {
		httpx.Fail(c, err)
		return
	}
	for _, r := range custom {
		out = append(out, Role{Name: r.Name, Permissions: r.Permissions})
	}
	httpx.OK(c, http.StatusOK, "Roles", out, nil)
}

func (h *HTTP) permissions(c *gin.Context) {
	if !allowed(c, rbac.RolesRead) {
		return
	}
	httpx.OK(c, http.StatusOK, "Permissions", rbac.Permissions(), nil)
}

func (h *HTTP) listUsers(c *gin.Context) {
	if !allowed(c, rbac.UsersRead) {
		return
	}
	f := apperr.Fields{}
	page, perPage := pageParams(c, f)
	order := sortParam(c, f, map[string]string{"name": "lower(name)", "email": "lower(email)", "created_at": "created_at"}, "created_at")
	where := []string{"organization_id = $1", "deleted_at IS NULL"}
	args := []any{principal(c).OrganizationID}
	if v, ok := oneOf(c, f, "status", "active", "deactivated"); ok {
		args = append(args, v)
		where = append(where, fmt.Sprintf("status = $%d", len(args)))
	}
	if v := c.Query("role"); v != "" {
		if len(v) > 64 {
			f.Add("role", "must be at most 64 characters")
		}
		args = append(args, v)
		where = append(where, fmt.Sprintf("$%d = ANY(roles)", len(args)))
	}
	if v := strings.TrimSpace(c.Query("search")); v != "" {
		if len(v) > 200 {
			f.Add("search", "must be at most 200 characters")
		}
		args = append(args, likePattern(v))
		where = append(where, fmt.Sprintf("lower(name || ' ' || email) LIKE $%d", len(args)))
	}
	if err := f.Err(); err != nil {
		httpx.Fail(c, err)
		return
	}
	respondPage(c, h, "Users", listQuery{from: "users", columns: readmodel.UserColumns, where: strings.Join(where, " AND "),
		order: order, args: args, page: page, perPage: perPage},
		func(r pgx.CollectableRow) (readmodel.User, error) { return readmodel.ScanUser(r) })
}

// listTokens lists the caller's live tokens, newest first.
func (h *HTTP) listTokens(c *gin.Context) {
	if !allowed(c, rbac.TokensWrite) {
		return
	}
	p := principal(c)
	f := apperr.Fields{}
	page, perPage := pageParams(c, f)
	if err := f.Err(); err != nil {
		httpx.Fail(c, err)
		return
	}
	respondPage(c, h, "Tokens", listQuery{from: "api_tokens t LEFT JOIN api_token_credentials c ON c.token_id = t.id",
		columns: "t.id, t.name, t.abilities, t.expires_at, c.last_used_at, t.created_at",
		where:   "t.user_id = $1 AND t.organization_id = $2 AND t.revoked_at IS NULL",
		order:   "t.created_at DESC, t.id DESC", args: []any{p.UserID, p.OrganizationID}, page: page, perPage: perPage},
		func(r pgx.CollectableRow) (Token, error) {
			var t Token
			err := r.Scan(&t.ID, &t.Name, &t.Abilities, &t.ExpiresAt, &t.LastUsedAt, &t.CreatedAt)
			return t, err
		})
}

// Me is the caller with their effective permissions.
type Me struct {
	readmodel.User
	Permissions []string `json:"permissions"`
}

// Role is a role with its permissions.
type Role struct {
	Name        string   `json:"name"`
	Builtin     bool     `json:"builtin"`
	Permissions []string `json:"permissions"`
}

// Token is an API token as listed: never its secret.
type Token struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Abilities  []string   `json:"abilities"`
	ExpiresAt  *time.Time `json:"expires_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	CreatedAt  time.Time  `json:"created_at"`
}
