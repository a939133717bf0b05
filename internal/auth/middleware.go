package auth

import (
	"context"
	"crypto/subtle"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/bounded"
	"github.com/chatbotsaas/chatbotd/internal/db"
	"github.com/chatbotsaas/chatbotd/internal/httpx"
	"github.com/chatbotsaas/chatbotd/internal/rbac"
)

// Authenticator turns a bearer credential (an access token or an API token) into a
// Principal. It decides from the rows that commands write in the same transaction as
// their events: the session is not revoked, the user exists and is active, and their
// roles and the roles' permissions are as they are now. It reads them in one query on
// the primary database, or from its cache of them (see stateCache), which those same
// transactions invalidate. So a logout, a deactivation or a role change counts on the
// very next request, without waiting for any projection.
type Authenticator struct {
	// OnDenied, when set, is told of every request refused for a missing permission (the
	// security event of the audit trail). It runs on the request path: keep it short.
	OnDenied func(c *gin.Context, p Principal, permission string)
	// Logger, when set, is told when the state cache turns off and on.
	Logger *slog.Logger

	tokens *Tokens
	// creds is the primary database (never a replica: a revocation must count at once).
	creds *pgxpool.Pool
	// lastUsed debounces last_used_at writes to one a minute per token.
	lastUsed sync.Map
	verified verifiedTokens
	// cache is nil when the state cache is off: every request reads the database.
	cache *stateCache
}

// verifiedTokens remembers access tokens whose signature and claims were verified. A
// JWT's content cannot change, so verifying it once is enough; expiry is checked again
// on every use, and what can change (the session, the user) is read on every request.
// Ed25519 verification costs about 60 µs, a large share of a cached read.
type verifiedTokens struct{ m *bounded.Map[string, Claims] }

const maxVerifiedTokens = 10000

func (v verifiedTokens) verify(raw string, verify func(string) (Claims, error)) (Claims, error) {
	c, ok := v.m.Get(raw)
	if ok && c.ExpiresAt != nil && time.Now().Before(c.ExpiresAt.Time) {
		return c, nil
	}
	c, err := verify(raw)
	if err != nil {
		return c, err
	}
	v.m.Put(raw, c)
	return c, nil
}

// NewAuthenticator returns an authenticator over the primary database. With a positive
// cacheTTL it keeps authentication state in memory for up to that long, trusted only
// while Listen runs (see stateCache); zero reads the database on every request.
func NewAuthenticator(tokens *Tokens, creds *pgxpool.Pool, cacheTTL time.Duration) *Authenticator {
	return &Authenticator{tokens: tokens, creds: creds, cache: newStateCache(cacheTTL),
		verified: verifiedTokens{bounded.New[string, Claims](maxVerifiedTokens)}}
}

var errUnauthenticated = apperr.New(apperr.CodeUnauthenticated, "Missing, expired or invalid credentials")

func bearer(h string) (string, bool) {
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return "", false
	}
	return strings.TrimSpace(token), true
}

// Authenticate checks the request's credentials.
func (a *Authenticator) Authenticate(ctx context.Context, authorization string) (Principal, error) {
	raw, ok := bearer(authorization)
	if !ok {
		return Principal{}, errUnauthenticated
	}
	if strings.HasPrefix(raw, APITokenPrefix) {
		return a.authenticateAPIToken(ctx, raw)
	}
	claims, err := a.verified.verify(raw, a.tokens.VerifyAccess)
	if err != nil {
		return Principal{}, errUnauthenticated
	}
	userID, _ := uuid.Parse(claims.Subject)
	sessionID, err1 := uuid.Parse(claims.SessionID)
	orgID, err2 := uuid.Parse(claims.OrganizationID)
	if err1 != nil || err2 != nil {
		return Principal{}, errUnauthenticated
	}
	st, err := a.sessionState(ctx, userID, sessionID)
	if err != nil {
		return Principal{}, err
	}
	if !st.found || !st.active || st.org != orgID || !st.sessionLive {
		return Principal{}, errUnauthenticated
	}
	if st.suspended {
		return Principal{}, errSuspended
	}
	perms := st.permissions
	if st.operator {
		// Only a login session of an operator account: API tokens never carry it. A copy:
		// the cached state's slice is shared by every request of the session.
		perms = append(slices.Clip(perms), rbac.PlatformOperate)
	}
	return Principal{Credential: "user:" + userID.String(), UserID: userID, OrganizationID: orgID, SessionID: sessionID,
		Roles: st.roles, Permissions: perms}, nil
}

var errSuspended = apperr.New(apperr.CodeOrgSuspended, "This organization is suspended; contact the platform's operators")

// authState is what authentication knows of a user (and a session) right now.
type authState struct {
	found  bool
	org    uuid.UUID
	active bool
	roles  []string
	// permissions are the roles' (built-in and custom) as rbac.PermissionsOf sorts them,
	// worked out once when the state is read, not on every request it authenticates.
	// Shared by those requests: read only.
	permissions []string
	sessionLive bool
	suspended   bool // the user's organization is suspended
	operator    bool // a platform operator
}

// sessionState is a session's state, from the cache or the database.
func (a *Authenticator) sessionState(ctx context.Context, user, session uuid.UUID) (authState, error) {
	k := cacheKey{id: session}
	v, gen, ok := a.cache.get(k, time.Now())
	if ok && v.user == user {
		return v.state, nil
	}
	st, err := a.state(ctx, user, session)
	if err == nil {
		a.cache.put(k, cachedAuth{user: user, org: st.org, state: st, loaded: time.Now()}, gen)
	}
	return st, err
}

func (a *Authenticator) state(ctx context.Context, user, session uuid.UUID) (authState, error) {
	st := authState{found: true}
	var live *bool
	err := a.creds.QueryRow(ctx, `
		SELECT c.organization_id, c.active, c.platform_operator,
			ARRAY(SELECT role FROM role_assignments WHERE user_id = c.user_id ORDER BY role),
			(SELECT NOT revoked FROM session_credentials WHERE session_id = $2 AND user_id = c.user_id),
			coalesce((SELECT suspended FROM organization_states WHERE organization_id = c.organization_id), false)
		FROM user_credentials c WHERE c.user_id = $1`, user, session).
		Scan(&st.org, &st.active, &st.operator, &st.roles, &live, &st.suspended)
	if errors.Is(err, pgx.ErrNoRows) {
		return authState{}, nil
	}
	if err != nil {
		return authState{}, db.Classify(err)
	}
	st.sessionLive = live != nil && *live
	return st, a.addPermissions(ctx, &st)
}

// addPermissions sets the state's permissions: those of its built-in roles, and those of
// the custom roles it holds, read from the database (most users hold built-in roles only
// and cost no query here).
func (a *Authenticator) addPermissions(ctx context.Context, st *authState) error {
	var custom []string
	for _, r := range st.roles {
		if !rbac.IsBuiltinRole(r) {
			custom = append(custom, r)
		}
	}
	var customPermissions []string
	if len(custom) > 0 {
		err := a.creds.QueryRow(ctx, `SELECT coalesce(array_agg(DISTINCT p), '{}') FROM role_names, unnest(permissions) AS p
			WHERE organization_id = $1 AND name = ANY($2)`, st.org, custom).Scan(&customPermissions)
		if err != nil {
			return db.Classify(err)
		}
	}
	st.permissions = rbac.PermissionsOf(st.roles, customPermissions)
	return nil
}

// tokenState is an API token's row and its owner's state.
type tokenState struct {
	user, org uuid.UUID
	stored    []byte
	abilities []string
	expires   *time.Time
	ownerOrg  *uuid.UUID
	active    *bool
	owner     authState
}

// authenticateAPIToken checks an API token against its stored hash; the token acts with
// the intersection of its abilities and its owner's permissions as they are now, and
// stops working when the owner is deactivated or deleted.
func (a *Authenticator) authenticateAPIToken(ctx context.Context, raw string) (Principal, error) {
	id, hash, ok := ParseAPIToken(raw)
	if !ok {
		return Principal{}, errUnauthenticated
	}
	t, found, err := a.tokenState(ctx, id)
	if err != nil {
		return Principal{}, err
	}
	if !found || subtle.ConstantTimeCompare(t.stored, hash) != 1 || (t.expires != nil && time.Now().After(*t.expires)) {
		return Principal{}, errUnauthenticated
	}
	if t.ownerOrg == nil || t.active == nil || !*t.active || *t.ownerOrg != t.org {
		return Principal{}, errUnauthenticated
	}
	if t.owner.suspended {
		return Principal{}, errSuspended
	}
	a.touch(id)
	perms := make([]string, 0, len(t.abilities))
	for _, ab := range t.abilities {
		if _, found := slices.BinarySearch(t.owner.permissions, ab); found {
			perms = append(perms, ab)
		}
	}
	return Principal{Credential: "token:" + id.String(), UserID: t.user, OrganizationID: t.org, TokenID: id,
		Roles: t.owner.roles, Permissions: perms}, nil
}

// tokenState is an API token's state, from the cache or the database; found is false
// for a token that does not exist (never cached: anyone can make up token ids).
func (a *Authenticator) tokenState(ctx context.Context, id uuid.UUID) (*tokenState, bool, error) {
	k := cacheKey{token: true, id: id}
	v, gen, ok := a.cache.get(k, time.Now())
	if ok {
		return v.token, true, nil
	}
	t := &tokenState{owner: authState{found: true}}
	// The token and its owner's state in one round trip.
	err := a.creds.QueryRow(ctx, `SELECT t.user_id, t.organization_id, t.secret_hash, t.abilities, t.expires_at,
			c.organization_id, c.active, ARRAY(SELECT role FROM role_assignments WHERE user_id = t.user_id ORDER BY role),
			coalesce((SELECT suspended FROM organization_states WHERE organization_id = t.organization_id), false)
		FROM api_token_credentials t LEFT JOIN user_credentials c ON c.user_id = t.user_id
		WHERE t.token_id = $1`, id).Scan(&t.user, &t.org, &t.stored, &t.abilities, &t.expires, &t.ownerOrg, &t.active,
		&t.owner.roles, &t.owner.suspended)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, db.Classify(err)
	}
	t.owner.org, t.owner.active = t.org, t.active != nil && *t.active
	if err := a.addPermissions(ctx, &t.owner); err != nil {
		return nil, false, err
	}
	a.cache.put(k, cachedAuth{user: t.user, org: t.org, token: t, loaded: time.Now()}, gen)
	return t, true, nil
}

// touch records a token's use, at most once a minute, off the request path.
func (a *Authenticator) touch(id uuid.UUID) {
	now := time.Now()
	if last, ok := a.lastUsed.Load(id); ok && now.Sub(last.(time.Time)) < time.Minute {
		return
	}
	a.lastUsed.Store(id, now)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = a.creds.Exec(ctx, `UPDATE api_token_credentials SET last_used_at = $2 WHERE token_id = $1`, id, now)
	}()
}

// PrincipalKey is where the authenticated caller is kept in the Gin context.
const PrincipalKey = "principal"

// Middleware enforces a route's access level: Public, Authenticated or a permission.
func (a *Authenticator) Middleware(access string) gin.HandlerFunc {
	return func(c *gin.Context) {
		if access == rbac.Public {
			c.Next()
			return
		}
		p, err := a.Authenticate(c.Request.Context(), c.GetHeader("Authorization"))
		if err != nil {
			httpx.Fail(c, err)
			return
		}
		if access != rbac.Authenticated {
			if err := p.Require(access); err != nil {
				if a.OnDenied != nil {
					a.OnDenied(c, p, access)
				}
				httpx.Fail(c, err)
				return
			}
		}
		c.Set(PrincipalKey, p)
		c.Next()
	}
}

// SessionOnly refuses, after Middleware, a caller that is not a login session (403
// SESSION_REQUIRED): for routes that act on the caller's own credentials.
func SessionOnly() gin.HandlerFunc {
	return func(c *gin.Context) {
		p, _ := PrincipalOf(c)
		if err := p.RequireSession(); err != nil {
			httpx.Fail(c, err)
			return
		}
		c.Next()
	}
}

// PrincipalOf returns the authenticated caller; ok is false on public routes.
func PrincipalOf(c *gin.Context) (Principal, bool) {
	v, ok := c.Get(PrincipalKey)
	if !ok {
		return Principal{}, false
	}
	p, ok := v.(Principal)
	return p, ok
}
