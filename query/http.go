// Package query is the read side: it answers from the read models and the cache only
// (never from the event log or the aggregates), scoped to the caller's organization.
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
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/auth"
	"github.com/chatbotsaas/chatbotd/internal/cache"
	"github.com/chatbotsaas/chatbotd/internal/httpx"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
)

// HTTP is the query endpoints.
type HTTP struct {
	read *pgxpool.Pool
	// primary serves what must not lag: verifying the audit chain reads the log, the
	// chain and the audit trail in one snapshot.
	primary  *pgxpool.Pool
	chainKey events.ChainKey
	cache    *cache.Cache
	tokens   *auth.Tokens
	// ConsistencyWait bounds how long a query waits for X-Consistency-Token.
	consistencyWait time.Duration
	applied         *readmodel.Applied
	streams         streamOwners
	waits           chan struct{} // a slot per running consistency wait
}

// NewHTTP returns the query endpoints over the read pool and the cache; primary and
// chainKey verify the audit chain.
//
// applied wakes the reads that wait for a consistency token; when nil, they poll.
func NewHTTP(read, primary *pgxpool.Pool, c *cache.Cache, tokens *auth.Tokens, chainKey events.ChainKey, applied *readmodel.Applied) *HTTP {
	return &HTTP{read: read, primary: primary, chainKey: chainKey, cache: c, tokens: tokens, applied: applied, consistencyWait: 5 * time.Second,
		waits: make(chan struct{}, maxWaits)}
}

// projectionOf names, for each stream type, the projection that reads it: the one a
// consistency token of that stream waits for.
var projectionOf = map[string]string{
	events.StreamOrganization: readmodel.AccountsProjection,
	events.StreamUser:         readmodel.AccountsProjection,
	events.StreamSession:      readmodel.AccountsProjection,
	events.StreamToken:        readmodel.AccountsProjection,
	events.StreamRole:         readmodel.AccountsProjection,
	events.StreamChatbot:      readmodel.ChatbotsProjection,
	events.StreamKnowledge:    readmodel.ChatbotsProjection,
	events.StreamTraining:     readmodel.ChatbotsProjection,
	events.StreamConversation: readmodel.ConversationsProjection,
	events.StreamMessage:      readmodel.ConversationsProjection,
	events.StreamWebhook:      readmodel.WebhooksProjection,
}

// Routes lists the query endpoints with their access.
func (h *HTTP) Routes() []httpx.Route {
	return []httpx.Route{
		httpx.R(http.MethodGet, "/.well-known/jwks.json", auth.Public, h.jwks),
		httpx.R(http.MethodGet, "/api/v1/auth/me", auth.Authenticated, h.me),
		httpx.R(http.MethodGet, "/api/v1/users", auth.UsersRead, h.listUsers),
		httpx.R(http.MethodGet, "/api/v1/users/check-email", auth.UsersRead, h.checkEmail),
		httpx.R(http.MethodGet, "/api/v1/users/:id", auth.UsersRead, h.getUser),
		httpx.R(http.MethodGet, "/api/v1/organization", auth.Authenticated, h.organization),
		httpx.R(http.MethodGet, "/api/v1/roles", auth.RolesRead, h.roles),
		httpx.R(http.MethodGet, "/api/v1/permissions", auth.RolesRead, h.permissions),
		httpx.R(http.MethodGet, "/api/v1/tokens", auth.TokensWrite, h.listTokens),
		httpx.R(http.MethodGet, "/api/v1/chatbots", auth.ChatbotsRead, h.listChatbots),
		httpx.R(http.MethodGet, "/api/v1/chatbots/:id", auth.ChatbotsRead, h.getChatbot),
		httpx.R(http.MethodGet, "/api/v1/chatbots/:id/knowledge", auth.ChatbotsRead, h.listKnowledge),
		httpx.R(http.MethodGet, "/api/v1/conversations", auth.ConversationsRead, h.listConversations),
		httpx.R(http.MethodGet, "/api/v1/conversations/:id", auth.ConversationsRead, h.getConversation),
		httpx.R(http.MethodGet, "/api/v1/conversations/:id/messages", auth.ConversationsRead, h.listMessages),
		httpx.R(http.MethodGet, "/api/v1/audit-logs", auth.AuditRead, h.listAuditLogs),
		httpx.R(http.MethodGet, "/api/v1/audit-logs/export", auth.AuditRead, h.exportAuditLogs),
		httpx.R(http.MethodGet, "/api/v1/audit-logs/verify", auth.AuditRead, h.verifyAuditLogs),
		httpx.R(http.MethodGet, "/api/v1/events", auth.AuditRead, h.listEvents),
		httpx.R(http.MethodGet, "/api/v1/events/catalog", auth.Authenticated, h.eventCatalog),
		httpx.R(http.MethodGet, "/api/v1/analytics/overview", auth.AnalyticsRead, h.analyticsOverview),
		httpx.R(http.MethodGet, "/api/v1/webhooks", auth.WebhooksRead, h.listWebhooks),
		httpx.R(http.MethodGet, "/api/v1/webhooks/:id", auth.WebhooksRead, h.getWebhook),
		httpx.R(http.MethodGet, "/api/v1/webhooks/:id/deliveries", auth.WebhooksRead, h.listDeliveries),
		httpx.R(http.MethodGet, "/api/v1/admin/organizations", auth.PlatformOperate, h.listOrganizations),
	}
}

// Consistency honours X-Consistency-Token on reads: the request waits (up to 5 s) until
// the projection that applies the token's stream has reached its version. It runs after
// authentication and the rate limit (an anonymous or throttled caller makes nobody
// wait), and only for a stream of the caller's organization: a token naming any other
// stream, another tenant's or one that does not exist, is the same 400, so it tells
// nothing about other tenants. At most maxWaits requests wait at once in one process;
// one that gets no turn before its deadline answers at once, marked X-Consistency:
// timeout, like a wait that ran out.
func (h *HTTP) Consistency() gin.HandlerFunc {
	return func(c *gin.Context) {
		raw := c.GetHeader("X-Consistency-Token")
		if raw == "" || (c.Request.Method != http.MethodGet && c.Request.Method != http.MethodHead) {
			c.Next()
			return
		}
		tok, err := events.ParseToken(raw)
		if err != nil {
			httpx.Fail(c, apperr.New(apperr.CodeBadRequest, "X-Consistency-Token: "+err.Error()))
			return
		}
		projection, ok := projectionOf[tok.StreamType]
		switch {
		case strings.HasPrefix(c.FullPath(), "/api/v1/audit-logs"):
			// Every stream is audited: the token waits for the audit trail instead.
			projection, ok = readmodel.AuditProjection, true
		case strings.HasPrefix(c.FullPath(), "/api/v1/analytics"):
			projection = readmodel.AnalyticsProjection
		}
		if !ok || tok.Version == 0 {
			c.Next()
			return
		}
		ctx, cancel := context.WithTimeout(c.Request.Context(), h.consistencyWait)
		defer cancel()
		mine, err := h.streams.belongs(ctx, h.primary, principal(c), tok.StreamID, tok.Version)
		if err != nil {
			httpx.Fail(c, err)
			return
		}
		if !mine {
			httpx.Fail(c, apperr.New(apperr.CodeBadRequest, "X-Consistency-Token names no write of your organization"))
			return
		}
		reached := false
		select {
		case h.waits <- struct{}{}:
			reached, err = h.applied.WaitApplied(ctx, h.read, projection, tok.StreamID, tok.Version)
			<-h.waits
			if err != nil {
				httpx.Fail(c, err)
				return
			}
		case <-ctx.Done():
		}
		if !reached {
			c.Header("X-Consistency", "timeout")
		}
		c.Set(awaitedKey, tok)
		c.Next()
	}
}

// maxWaits bounds the consistency waits of one process: each looks at the read model
// every 100 ms (every 2 to 50 ms while notifications are down).
const maxWaits = 128

// streamOwners remembers which organization each stream a token named belongs to (a
// stream never changes organization), so that a read with a token costs one look at the
// log per stream, not per request. The look is at the log on the primary, not at a read
// model: the command that returned the token committed there before it answered.
type streamOwners struct {
	mu sync.Mutex
	m  map[uuid.UUID]uuid.UUID
}

const maxStreamOwners = 10000

// belongs reports whether stream, at version, is a stream of p's organization (any
// stream, for a platform operator, whose commands act on other organizations).
func (s *streamOwners) belongs(ctx context.Context, primary *pgxpool.Pool, p auth.Principal, stream uuid.UUID, version int) (bool, error) {
	if p.Can(auth.PlatformOperate) {
		return true, nil
	}
	s.mu.Lock()
	org, ok := s.m[stream]
	s.mu.Unlock()
	if ok {
		return org == p.OrganizationID, nil
	}
	var owner *uuid.UUID
	err := primary.QueryRow(ctx, `SELECT organization_id FROM events WHERE stream_id = $1 AND stream_version = $2`,
		stream, version).Scan(&owner)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && owner == nil) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	if s.m == nil || len(s.m) >= maxStreamOwners {
		s.m = make(map[uuid.UUID]uuid.UUID, 1024) // forget everything: simple, bounded, rare
	}
	s.m[stream] = *owner
	s.mu.Unlock()
	return *owner == p.OrganizationID, nil
}

const awaitedKey = "consistency_token"

// awaited is the stream version the request's consistency token waited for, when the
// token names stream (0 otherwise): a reader through a cache must not answer older.
func awaited(c *gin.Context, stream uuid.UUID) int {
	if v, ok := c.Get(awaitedKey); ok {
		if tok, ok := v.(events.AppendResult); ok && tok.StreamID == stream {
			return tok.Version
		}
	}
	return 0
}

// allowed is each handler's own permission check, on top of the route's: a handler
// mounted on a route with a wrong declaration still refuses (deny by default).
func allowed(c *gin.Context, permission string) bool {
	p, ok := auth.PrincipalOf(c)
	if !ok {
		httpx.Fail(c, apperr.New(apperr.CodeUnauthenticated, "Missing, expired or invalid credentials"))
		return false
	}
	if permission == auth.Authenticated {
		return true
	}
	if err := p.Require(permission); err != nil {
		httpx.Fail(c, err)
		return false
	}
	return true
}

func principal(c *gin.Context) auth.Principal {
	p, _ := auth.PrincipalOf(c)
	return p
}

func (h *HTTP) jwks(c *gin.Context) {
	c.Header("Cache-Control", "public, max-age=300")
	c.JSON(http.StatusOK, h.tokens.JWKS())
}

// Me is the caller with their effective permissions.
type Me struct {
	readmodel.User
	Permissions []string `json:"permissions"`
}

func (h *HTTP) me(c *gin.Context) {
	if !allowed(c, auth.Authenticated) {
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

// inOrganization reads the record the path's id names in the caller's organization:
// query takes $1 the id and $2 the organization. A missing record is NOT_FOUND what. It
// answers the failure itself and reports whether there is a record.
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
	if !allowed(c, auth.UsersRead) {
		return
	}
	id, err := httpx.PathUUID(c, "id")
	if err != nil {
		httpx.Fail(c, err)
		return
	}
	u, err := readmodel.CachedUser(c.Request.Context(), h.cache, h.read, id, awaited(c, id))
	if err == nil && u.OrganizationID != principal(c).OrganizationID {
		err = readmodel.ErrNotFound // another tenant's user does not exist for this caller
	}
	if err != nil {
		httpx.Fail(c, notFound(err, "user"))
		return
	}
	c.Header("ETag", strconv.Quote(strconv.Itoa(u.Version)))
	httpx.OK(c, http.StatusOK, "User", u, nil)
}

func (h *HTTP) checkEmail(c *gin.Context) {
	if !allowed(c, auth.UsersRead) {
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
	if !allowed(c, auth.Authenticated) {
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

// Role is a role with its permissions.
type Role struct {
	Name        string   `json:"name"`
	Builtin     bool     `json:"builtin"`
	Permissions []string `json:"permissions"`
}

// roles lists the built-in roles, then the organization's custom roles by name.
func (h *HTTP) roles(c *gin.Context) {
	if !allowed(c, auth.RolesRead) {
		return
	}
	var out []Role
	for name, perms := range auth.BuiltinRoles() {
		sort.Strings(perms)
		out = append(out, Role{Name: name, Builtin: true, Permissions: perms})
	}
	order := map[string]int{auth.RoleOwner: 0, auth.RoleAdmin: 1, auth.RoleMember: 2, auth.RoleViewer: 3}
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
	if !allowed(c, auth.RolesRead) {
		return
	}
	httpx.OK(c, http.StatusOK, "Permissions", auth.Permissions(), nil)
}

// Pagination is meta.pagination of every list.
type Pagination struct {
	Page     int `json:"page"`
	PerPage  int `json:"per_page"`
	Total    int `json:"total"`
	LastPage int `json:"last_page"`
}

// pageParams reads page and per_page: page from 1, per_page 1..100 (larger is clamped).
func pageParams(c *gin.Context, f apperr.Fields) (page, perPage int) {
	page, perPage = 1, 15
	if v := c.Query("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			f.Add("page", "must be a whole number from 1")
		}
		page = n
	}
	if v := c.Query("per_page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			f.Add("per_page", "must be a whole number from 1 to 100")
		}
		perPage = min(n, 100)
	}
	return page, perPage
}

// sortParam maps ?sort=field|-field onto an ORDER BY clause from the allowed columns.
func sortParam(c *gin.Context, f apperr.Fields, allowed map[string]string, def string) string {
	v := c.DefaultQuery("sort", def)
	desc := strings.HasPrefix(v, "-")
	col, ok := allowed[strings.TrimPrefix(v, "-")]
	if !ok {
		keys := make([]string, 0, len(allowed))
		for k := range allowed {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		f.Add("sort", "must be one of "+strings.Join(keys, ", ")+", optionally prefixed with -")
		return ""
	}
	if desc {
		return col + " DESC, id DESC"
	}
	return col + " ASC, id ASC"
}

func likePattern(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return "%" + r.Replace(strings.ToLower(s)) + "%"
}

func (h *HTTP) listUsers(c *gin.Context) {
	if !allowed(c, auth.UsersRead) {
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

// Token is an API token as listed: never its secret.
type Token struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Abilities  []string   `json:"abilities"`
	ExpiresAt  *time.Time `json:"expires_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	CreatedAt  time.Time  `json:"created_at"`
}

// listTokens lists the caller's live tokens, newest first.
func (h *HTTP) listTokens(c *gin.Context) {
	if !allowed(c, auth.TokensWrite) {
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
