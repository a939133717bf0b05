package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/rbac"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// fill puts values into a route's path parameters.
func fill(path string, params map[string]string) string {
	for k, v := range params {
		path = strings.ReplaceAll(path, ":"+k, v)
	}
	return path
}

// TestRouteAccessMatrix calls every route of the router, as every built-in role and as
// an API token with fewer abilities, and checks that exactly the declared permission
// (and, for acts on one's own credentials, a login session) decides between 403 and not
// 403. A route without a declared access fails it, and so
// does a handler that lets through what its route declares it must not.
func TestRouteAccessMatrix(t *testing.T) {
	a := startApp(t, "RATE_LIMIT_PUBLIC_PER_MINUTE=10000", "RATE_LIMIT_API_PER_MINUTE=10000")
	_, ownerToken := a.register("Matrix Co", "Olga", "olga@example.com")
	type caller struct {
		name  string
		token string
		perms []string
		email string // to log in again, for logout
	}
	callers := []caller{{name: "owner", token: ownerToken, perms: rbac.BuiltinRoles()[rbac.RoleOwner], email: "olga@example.com"}}
	for _, role := range []string{rbac.RoleAdmin, rbac.RoleMember, rbac.RoleViewer} {
		email := role + "@matrix.example"
		a.createUser(ownerToken, "A "+role, email, role, nil)
		callers = append(callers, caller{name: role, token: a.login(email, "password1").AccessToken, perms: rbac.BuiltinRoles()[role], email: email})
	}
	var tok struct{ Token string }
	narrow := []string{rbac.UsersRead, rbac.RolesRead}
	a.expect(req{method: "POST", path: "/api/v1/tokens", token: ownerToken, body: map[string]any{"name": "narrow", "abilities": narrow}}, 201).data(t, &tok)
	callers = append(callers, caller{name: "token(users.read,roles.read)", token: tok.Token, perms: narrow})
	all := rbac.BuiltinRoles()[rbac.RoleOwner]
	a.expect(req{method: "POST", path: "/api/v1/tokens", token: ownerToken, body: map[string]any{"name": "all", "abilities": all}}, 201).data(t, &tok)
	callers = append(callers, caller{name: "token(all)", token: tok.Token, perms: all})

	params := map[string]string{"id": uuid.NewString(), "role": rbac.RoleViewer, "name": "no-such-role", "entry_id": uuid.NewString()}
	routes := apiRoutes(nil, nil, nil)
	require.NotEmpty(t, routes)
	for _, rt := range routes {
		require.NotEmpty(t, rt.Access, "%s %s declares no access", rt.Method, rt.Path)
		path := fill(rt.Path, params)
		var body any
		if rt.Method != http.MethodGet {
			body = map[string]any{}
		}
		if rt.Access != rbac.Public {
			r := a.do(req{method: rt.Method, path: path, body: body})
			assert.Equal(t, 401, r.Status, "%s %s without credentials: %s", rt.Method, rt.Path, r.Raw)
		}
		for _, c := range callers {
			token := c.token
			if rt.Path == "/api/v1/auth/logout" && !strings.HasPrefix(token, "cbt_") {
				token = a.login(c.email, map[bool]string{true: "correct horse", false: "password1"}[c.name == "owner"]).AccessToken
			}
			r := a.do(req{method: rt.Method, path: path, body: body, token: token})
			want := rt.Access == rbac.Public || rt.Access == rbac.Authenticated || slices.Contains(c.perms, rt.Access)
			if want && rt.Session && strings.HasPrefix(token, "cbt_") {
				// Acts on one's own credentials: never an API token's, whatever it holds.
				assert.Equal(t, 403, r.Status, "%s %s as %s needs a session: %s", rt.Method, rt.Path, c.name, r.Raw)
				assert.Contains(t, string(r.Raw), "SESSION_REQUIRED")
				continue
			}
			if want {
				assert.NotContains(t, []int{401, 403, 500}, r.Status, "%s %s as %s must be allowed: %s", rt.Method, rt.Path, c.name, r.Raw)
			} else {
				assert.Equal(t, 403, r.Status, "%s %s as %s must be denied: %s", rt.Method, rt.Path, c.name, r.Raw)
			}
		}
	}
	// Every denial is in the log as a security event.
	var denied int
	require.NoError(t, a.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE type = 'access.denied'`).Scan(&denied))
	assert.Positive(t, denied)
}

// TestCrossTenantSweep uses one organization's ids on every route that takes one, as
// another organization's owner: each is NOT_FOUND and leaks nothing.
func TestCrossTenantSweep(t *testing.T) {
	a := startApp(t, "RATE_LIMIT_PUBLIC_PER_MINUTE=10000", "RATE_LIMIT_API_PER_MINUTE=10000")
	_, victimToken := a.register("Victim Co", "Vic", "vic@victim.example")
	user, created := a.createUser(victimToken, "Secret Person", "secret@victim.example", "member", nil)
	var tok struct{ ID string }
	a.expect(req{method: "POST", path: "/api/v1/tokens", token: victimToken, body: map[string]any{"name": "t", "abilities": []string{"users.read"}}}, 201).data(t, &tok)
	role := a.expect(req{method: "POST", path: "/api/v1/roles", token: victimToken, body: map[string]any{"name": "victim-role", "permissions": []string{"users.read"}}}, 201)
	var bot struct{ ID string }
	a.expect(req{method: "POST", path: "/api/v1/chatbots", token: victimToken, body: map[string]any{"name": "Secret Person's bot"}}, 201).data(t, &bot)
	var entry struct{ ID string }
	a.expect(req{method: "POST", path: "/api/v1/chatbots/" + bot.ID + "/knowledge", token: victimToken,
		body: map[string]any{"question": "Secret Person's question?", "answer": "secret"}}, 201).data(t, &entry)
	entryID := entry.ID
	convBot := trainedBot(t, a, victimToken)
	var conv struct{ ID string }
	a.expect(req{method: "POST", path: "/api/v1/chatbots/" + convBot + "/conversations", token: victimToken, body: map[string]any{}}, 201).data(t, &conv)
	a.expect(req{method: "POST", path: "/api/v1/conversations/" + conv.ID + "/messages", token: victimToken, body: map[string]any{"content": "Secret Person asks"}}, 202)
	var hook struct{ ID string }
	hooked := a.expect(req{method: "POST", path: "/api/v1/webhooks", token: victimToken,
		body: map[string]any{"url": "https://203.0.113.10/secret-person", "events": []string{"nothing.happens"}}}, 201)
	hooked.data(t, &hook)
	a.expect(req{method: "GET", path: "/api/v1/webhooks/" + hook.ID, token: victimToken, headers: consistent(hooked)}, 200)
	a.expect(req{method: "GET", path: "/api/v1/users/" + user.ID, token: victimToken, headers: consistent(created)}, 200)
	a.expect(req{method: "GET", path: "/api/v1/roles", token: victimToken, headers: consistent(role)}, 200)

	_, attacker := a.register("Attacker Co", "Mallory", "mallory@attacker.example")
	ids := map[string]string{"/api/v1/users": user.ID, "/api/v1/tokens": tok.ID, "/api/v1/chatbots": convBot,
		"/api/v1/conversations": conv.ID, "/api/v1/webhooks": hook.ID}
	swept := 0
	for _, rt := range apiRoutes(nil, nil, nil) {
		if !strings.Contains(rt.Path, ":") || rt.Access == rbac.PlatformOperate {
			continue // platform operators' routes are cross-organization by design: a tenant gets 403 (TestRouteAccessMatrix)
		}
		params := map[string]string{"role": rbac.RoleViewer, "name": "victim-role", "entry_id": entryID}
		for prefix, id := range ids {
			if strings.HasPrefix(rt.Path, prefix+"/") {
				params["id"] = id
			}
		}
		if strings.Contains(rt.Path, ":id") && params["id"] == "" {
			t.Errorf("%s %s takes an id the sweep does not know: add it", rt.Method, rt.Path)
			continue
		}
		var body any
		if rt.Method != http.MethodGet {
			body = map[string]any{"name": "pwned", "permissions": []string{"users.read"}}
		}
		if rt.Method == http.MethodPatch && (strings.HasPrefix(rt.Path, "/api/v1/users") || strings.HasPrefix(rt.Path, "/api/v1/chatbots")) {
			body = map[string]any{"name": "pwned"}
		}
		if strings.HasSuffix(rt.Path, "/publish") || strings.HasSuffix(rt.Path, "/unpublish") || strings.HasSuffix(rt.Path, "/train") {
			body = nil
		}
		if strings.HasSuffix(rt.Path, "/messages") {
			body = map[string]any{"content": "pwned"}
		}
		if strings.HasSuffix(rt.Path, "/conversations") {
			body = map[string]any{}
		}
		if strings.Contains(rt.Path, "/knowledge") && rt.Method != http.MethodGet {
			body = map[string]any{"question": "pwned?", "answer": "pwned"}
			if strings.HasSuffix(rt.Path, "/import") {
				body = []map[string]any{{"question": "pwned?", "answer": "pwned"}}
			}
		}
		r := a.expectError(req{method: rt.Method, path: fill(rt.Path, params), body: body, token: attacker}, 404, "NOT_FOUND")
		assert.NotContains(t, string(r.Raw), "Secret Person")
		assert.NotContains(t, string(r.Raw), "secret@victim.example")
		swept++
	}
	assert.GreaterOrEqual(t, swept, 12)

	// Lists, search, sort and check-email show nothing of the victim either.
	for _, path := range []string{"/api/v1/users?search=secret", "/api/v1/users?sort=-email&per_page=100", "/api/v1/roles",
		"/api/v1/chatbots?search=secret", "/api/v1/chatbots?sort=-name", "/api/v1/conversations",
		"/api/v1/tokens", "/api/v1/users/check-email?email=secret@victim.example",
		"/api/v1/audit-logs?per_page=100", "/api/v1/audit-logs?subject_id=" + user.ID, "/api/v1/audit-logs/export",
		"/api/v1/audit-logs/export?format=csv", "/api/v1/events?limit=10000", "/api/v1/events?stream_id=" + user.ID} {
		r := a.expect(req{method: "GET", path: path, token: attacker}, 200)
		for _, leak := range []string{"Secret Person", "victim-role", `"exists":true`, user.ID, tok.ID, conv.ID} {
			assert.NotContains(t, string(r.Raw), leak, path)
		}
	}
	// And the victim's data is untouched.
	testenv.Eventually(t, 5*time.Second, func() error {
		r := a.do(req{method: "GET", path: "/api/v1/users/" + user.ID, token: victimToken})
		if !strings.Contains(string(r.Raw), "Secret Person") {
			return fmt.Errorf("victim changed: %s", r.Raw)
		}
		return nil
	})
}

// TestForgedAccessTokensAre401 presents forged JWTs over HTTP: each is 401.
func TestForgedAccessTokensAre401(t *testing.T) {
	a := startApp(t)
	_, token := a.register("Forge Co", "Fay", "fay@example.com")
	a.expect(req{method: "GET", path: "/api/v1/auth/me", token: token}, 200)

	var jwks struct {
		Keys []struct{ Kid, X string } `json:"keys"`
	}
	require.NoError(t, json.Unmarshal(a.expect(req{method: "GET", path: "/.well-known/jwks.json"}, 200).Raw, &jwks))
	require.NotEmpty(t, jwks.Keys)
	pub, err := base64.RawURLEncoding.DecodeString(jwks.Keys[0].X)
	require.NoError(t, err)
	kid := jwks.Keys[0].Kid

	// The real token's claims, re-signed or altered.
	parts := strings.Split(token, ".")
	require.Len(t, parts, 3)
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	require.NoError(t, err)
	var claims jwt.MapClaims
	require.NoError(t, json.Unmarshal(payload, &claims))
	with := func(k string, v any) jwt.MapClaims {
		c := jwt.MapClaims{}
		for kk, vv := range claims {
			c[kk] = vv
		}
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	_, otherKey, _ := ed25519.GenerateKey(nil)
	sign := func(m jwt.SigningMethod, key any, c jwt.MapClaims, kid string) string {
		tk := jwt.NewWithClaims(m, c)
		if kid != "" {
			tk.Header["kid"] = kid
		}
		s, err := tk.SignedString(key)
		require.NoError(t, err)
		return s
	}
	tampered := base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(payload), `"sub":"`, `"sub":"0`, 1)))
	forged := map[string]string{
		"alg none":                  sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims, kid),
		"HS256 signed with the JWK": sign(jwt.SigningMethodHS256, pub, claims, kid),
		"unknown kid":               sign(jwt.SigningMethodEdDSA, otherKey, claims, "not-a-key"),
		"our kid, another key":      sign(jwt.SigningMethodEdDSA, otherKey, claims, kid),
		"expired":                   sign(jwt.SigningMethodEdDSA, otherKey, with("exp", time.Now().Add(-time.Hour).Unix()), kid),
		"missing exp":               sign(jwt.SigningMethodEdDSA, otherKey, with("exp", nil), kid),
		"wrong iss":                 sign(jwt.SigningMethodEdDSA, otherKey, with("iss", "evil"), kid),
		"tampered payload":          parts[0] + "." + tampered + "." + parts[2],
		"signature stripped":        parts[0] + "." + parts[1] + ".",
	}
	for name, f := range forged {
		r := a.do(req{method: "GET", path: "/api/v1/auth/me", token: f})
		assert.Equal(t, 401, r.Status, name)
		assert.Equal(t, "UNAUTHENTICATED", r.Body.ErrorCode, name)
	}
}
