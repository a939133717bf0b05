// Package query is the read side: it answers from the read models and the cache only
// (never from the event log or the aggregates), scoped to the caller's organization.
package query

import (
	"net/http"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/auth"
	"github.com/chatbotsaas/chatbotd/internal/bounded"
	"github.com/chatbotsaas/chatbotd/internal/cache"
	"github.com/chatbotsaas/chatbotd/internal/httpx"
	"github.com/chatbotsaas/chatbotd/internal/rbac"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
)

// HTTP is the query endpoints.
type HTTP struct {
	read *pgxpool.Pool
	// primary serves what must not lag: verifying the audit chain reads the log, the
	// chain and the audit trail in one snapshot.
	primary *pgxpool.Pool
	// readsPrimary is true when read and primary reach the same database (no replica): a
	// read with a consistency token then looks at its stream's owner and at the
	// projection in one round trip (see Consistency).
	readsPrimary bool
	chainKey     events.ChainKey
	cache        *cache.Cache
	tokens       *auth.Tokens
	// ConsistencyWait bounds how long a query waits for X-Consistency-Token.
	consistencyWait time.Duration
	applied         *readmodel.Applied
	streams         streamOwners
	waits           chan struct{} // a slot per running consistency wait
	// projectionOf names, for each stream type, the projection its tokens wait for.
	projectionOf map[string]string
	// store is the event store's identity once read (eventstore.Identity), stamped on
	// the envelopes GET /api/v1/events streams as the relay stamps what it publishes.
	store atomic.Pointer[uuid.UUID]
}

// NewHTTP returns the query endpoints over the read pool and the cache; primary and
// chainKey verify the audit chain.
//
// applied wakes the reads that wait for a consistency token; when nil, they poll.
// waitsFor names, for each stream type, the projection that applies it: the one a
// consistency token of that stream waits for (projections.WaitsFor, from the registry).
func NewHTTP(read, primary *pgxpool.Pool, c *cache.Cache, tokens *auth.Tokens, chainKey events.ChainKey, applied *readmodel.Applied,
	waitsFor map[string]string) *HTTP {
	return &HTTP{read: read, primary: primary, readsPrimary: sameDatabase(read, primary), chainKey: chainKey, cache: c, tokens: tokens, applied: applied, consistencyWait: 5 * time.Second,
		waits: make(chan struct{}, maxWaits), projectionOf: waitsFor, streams: streamOwners{bounded.New[uuid.UUID, uuid.UUID](maxStreamOwners)}}
}

// Routes lists the query endpoints with their access.
func (h *HTTP) Routes() []httpx.Route {
	return []httpx.Route{
		httpx.R(http.MethodGet, "/.well-known/jwks.json", rbac.Public, h.jwks),
		httpx.R(http.MethodGet, "/api/v1/auth/me", rbac.Authenticated, h.me),
		httpx.R(http.MethodGet, "/api/v1/users", rbac.UsersRead, h.listUsers),
		httpx.R(http.MethodGet, "/api/v1/users/check-email", rbac.UsersRead, h.checkEmail),
		httpx.R(http.MethodGet, "/api/v1/users/:id", rbac.UsersRead, h.getUser),
		httpx.R(http.MethodGet, "/api/v1/organization", rbac.Authenticated, h.organization),
		httpx.R(http.MethodGet, "/api/v1/roles", rbac.RolesRead, h.roles),
		httpx.R(http.MethodGet, "/api/v1/permissions", rbac.RolesRead, h.permissions),
		httpx.R(http.MethodGet, "/api/v1/tokens", rbac.TokensWrite, h.listTokens),
		httpx.R(http.MethodGet, "/api/v1/chatbots", rbac.ChatbotsRead, h.listChatbots),
		httpx.R(http.MethodGet, "/api/v1/chatbots/:id", rbac.ChatbotsRead, h.getChatbot),
		httpx.R(http.MethodGet, "/api/v1/chatbots/:id/knowledge", rbac.ChatbotsRead, h.listKnowledge),
		httpx.R(http.MethodGet, "/api/v1/conversations", rbac.ConversationsRead, h.listConversations),
		httpx.R(http.MethodGet, "/api/v1/conversations/:id", rbac.ConversationsRead, h.getConversation),
		httpx.R(http.MethodGet, "/api/v1/conversations/:id/messages", rbac.ConversationsRead, h.listMessages),
		httpx.R(http.MethodGet, "/api/v1/audit-logs", rbac.AuditRead, h.listAuditLogs),
		httpx.R(http.MethodGet, "/api/v1/audit-logs/export", rbac.AuditRead, h.exportAuditLogs),
		httpx.R(http.MethodGet, "/api/v1/audit-logs/verify", rbac.AuditRead, h.verifyAuditLogs),
		httpx.R(http.MethodGet, "/api/v1/events", rbac.AuditRead, h.listEvents),
		httpx.R(http.MethodGet, "/api/v1/events/catalog", rbac.Authenticated, h.eventCatalog),
		httpx.R(http.MethodGet, "/api/v1/analytics/overview", rbac.AnalyticsRead, h.analyticsOverview),
		httpx.R(http.MethodGet, "/api/v1/webhooks", rbac.WebhooksRead, h.listWebhooks),
		httpx.R(http.MethodGet, "/api/v1/webhooks/:id", rbac.WebhooksRead, h.getWebhook),
		httpx.R(http.MethodGet, "/api/v1/webhooks/:id/deliveries", rbac.WebhooksRead, h.listDeliveries),
		httpx.R(http.MethodGet, "/api/v1/admin/organizations", rbac.PlatformOperate, h.listOrganizations),
	}
}

// allowed is each handler's own permission check, on top of the route's: a handler
// mounted on a route with a wrong declaration still refuses (deny by default).
func allowed(c *gin.Context, permission string) bool {
	p, ok := auth.PrincipalOf(c)
	if !ok {
		httpx.Fail(c, apperr.New(apperr.CodeUnauthenticated, "Missing, expired or invalid credentials"))
		return false
	}
	if permission == rbac.Authenticated {
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
	httpx.JSON(c, http.StatusOK, h.tokens.JWKS())
}
