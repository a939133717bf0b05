package auth

import (
	"context"
	"crypto/subtle"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/cache"
	"github.com/chatbotsaas/chatbotd/internal/httpx"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
)

// Authenticator turns a bearer access token into a Principal, checking on every request
// that the session is not revoked and the user is active, and taking the user's roles as
// they are now (not as they were when the token was issued).
type Authenticator struct {
	tokens *Tokens
	read   readmodel.Querier
	// creds is the primary database, where API token credentials are (never a replica:
	// a revocation must count at once).
	creds *pgxpool.Pool
	cache *cache.Cache
	// lastUsed debounces last_used_at writes to one a minute per token.
	lastUsed sync.Map
	// fresh is how long a just-issued session or user may be waited for while the
	// projection catches up (read-your-writes for a token used right after login).
	fresh time.Duration
}

// NewAuthenticator returns an authenticator reading the accounts read model.
func NewAuthenticator(tokens *Tokens, read readmodel.Querier, creds *pgxpool.Pool, c *cache.Cache) *Authenticator {
	return &Authenticator{tokens: tokens, read: read, creds: creds, cache: c, fresh: 3 * time.Second}
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
	claims, err := a.tokens.VerifyAccess(raw)
	if err != nil {
		return Principal{}, errUnauthenticated
	}
	userID, _ := uuid.Parse(claims.Subject)
	sessionID, err1 := uuid.Parse(claims.SessionID)
	orgID, err2 := uuid.Parse(claims.OrganizationID)
	if err1 != nil || err2 != nil {
		return Principal{}, errUnauthenticated
	}
	fresh := claims.IssuedAt != nil && time.Since(claims.IssuedAt.Time) < a.fresh
	loadSession := func(ctx context.Context) (readmodel.Session, error) {
		return readmodel.LoadSession(ctx, a.read, sessionID)
	}
	session, err := loadSession(ctx)
	if errors.Is(err, readmodel.ErrNotFound) && fresh {
		session, err = waitFor(ctx, a, sessionID, loadSession)
	}
	if errors.Is(err, readmodel.ErrNotFound) {
		return Principal{}, errUnauthenticated
	}
	if err != nil {
		return Principal{}, err
	}
	if session.Revoked || session.UserID != userID {
		return Principal{}, errUnauthenticated
	}
	loadUser := func(ctx context.Context) (readmodel.User, error) {
		return readmodel.CachedUser(ctx, a.cache, a.read, userID)
	}
	user, err := loadUser(ctx)
	if errors.Is(err, readmodel.ErrNotFound) && fresh {
		user, err = waitFor(ctx, a, userID, loadUser)
	}
	if err != nil && !errors.Is(err, readmodel.ErrNotFound) {
		return Principal{}, err
	}
	if err != nil || user.Status != "active" || user.OrganizationID != orgID {
		return Principal{}, errUnauthenticated
	}
	return Principal{Credential: "user:" + userID.String(), UserID: userID, OrganizationID: orgID, SessionID: sessionID, Roles: user.Roles,
		Permissions: PermissionsOf(user.Roles)}, nil
}

// authenticateAPIToken checks an API token against its stored hash; the token acts with
// the intersection of its abilities and its owner's permissions as they are now, and
// stops working when the owner is deactivated or deleted.
func (a *Authenticator) authenticateAPIToken(ctx context.Context, raw string) (Principal, error) {
	id, hash, ok := ParseAPIToken(raw)
	if !ok {
		return Principal{}, errUnauthenticated
	}
	var userID, orgID uuid.UUID
	var stored []byte
	var abilities []string
	var expires *time.Time
	err := a.creds.QueryRow(ctx, `SELECT user_id, organization_id, secret_hash, abilities, expires_at
		FROM api_token_credentials WHERE token_id = $1`, id).Scan(&userID, &orgID, &stored, &abilities, &expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return Principal{}, errUnauthenticated
	}
	if err != nil {
		return Principal{}, err
	}
	if subtle.ConstantTimeCompare(stored, hash) != 1 || (expires != nil && time.Now().After(*expires)) {
		return Principal{}, errUnauthenticated
	}
	user, err := readmodel.CachedUser(ctx, a.cache, a.read, userID)
	if err != nil && !errors.Is(err, readmodel.ErrNotFound) {
		return Principal{}, err
	}
	if err != nil || user.Status != "active" || user.OrganizationID != orgID {
		return Principal{}, errUnauthenticated
	}
	a.touch(id)
	owner := PermissionsOf(user.Roles)
	perms := make([]string, 0, len(abilities))
	for _, ab := range abilities {
		if slices.Contains(owner, ab) {
			perms = append(perms, ab)
		}
	}
	return Principal{Credential: "token:" + id.String(), UserID: userID, OrganizationID: orgID, TokenID: id,
		Roles: user.Roles, Permissions: perms}, nil
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

// waitFor waits (briefly) for the accounts projection to have applied a stream's first
// event, then loads again.
func waitFor[T any](ctx context.Context, a *Authenticator, stream uuid.UUID, load func(context.Context) (T, error)) (T, error) {
	wctx, cancel := context.WithTimeout(ctx, a.fresh)
	defer cancel()
	if _, err := readmodel.WaitApplied(wctx, a.read, readmodel.AccountsProjection, stream, 1); err != nil {
		var zero T
		return zero, err
	}
	return load(ctx)
}

const principalKey = "principal"

// Middleware enforces a route's access level: Public, Authenticated or a permission.
func (a *Authenticator) Middleware(access string) gin.HandlerFunc {
	return func(c *gin.Context) {
		if access == Public {
			c.Next()
			return
		}
		p, err := a.Authenticate(c.Request.Context(), c.GetHeader("Authorization"))
		if err != nil {
			httpx.Fail(c, err)
			return
		}
		if access != Authenticated {
			if err := p.Require(access); err != nil {
				httpx.Fail(c, err)
				return
			}
		}
		c.Set(principalKey, p)
		c.Next()
	}
}

// PrincipalOf returns the authenticated caller; ok is false on public routes.
func PrincipalOf(c *gin.Context) (Principal, bool) {
	v, ok := c.Get(principalKey)
	if !ok {
		return Principal{}, false
	}
	p, ok := v.(Principal)
	return p, ok
}
