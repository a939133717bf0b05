package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// countEvents counts the app's events of a type.
func (a *app) countEvents(eventType string) int {
	a.t.Helper()
	var n int
	require.NoError(a.t, a.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE type = $1`, eventType).Scan(&n))
	return n
}

// apiToken makes an API token with abilities for the holder of session.
func (a *app) apiToken(session string, abilities ...string) (id, secret string) {
	a.t.Helper()
	var tok struct{ ID, Token string }
	a.expect(req{method: "POST", path: "/api/v1/tokens", token: session,
		body: map[string]any{"name": "t " + uuid.NewString()[:6], "abilities": abilities}}, 201).data(a.t, &tok)
	return tok.ID, tok.Token
}

// Acts on one's own credentials need a login session: an API token, whatever its
// abilities, gets 403 SESSION_REQUIRED.
func TestActsOnOwnCredentialsNeedASession(t *testing.T) {
	a := startApp(t)
	_, owner := a.register("Session Co", "Sal", "sal@session.example")
	id, narrow := a.apiToken(owner, "chatbots.read")
	_, wide := a.apiToken(owner, "tokens.write", "users.read")

	change := map[string]string{"current_password": "correct horse", "password": "new password 1", "password_confirmation": "new password 1"}
	for _, r := range []req{
		{method: "PUT", path: "/api/v1/auth/password", body: change, token: narrow},
		{method: "PUT", path: "/api/v1/auth/password", body: change, token: wide},
		{method: "POST", path: "/api/v1/tokens", body: map[string]any{"name": "more", "abilities": []string{"users.read"}}, token: wide},
		{method: "DELETE", path: "/api/v1/tokens/" + id, token: wide},
		{method: "POST", path: "/api/v1/auth/logout", token: wide},
	} {
		a.expectError(r, 403, "SESSION_REQUIRED")
	}
	a.expect(req{method: "GET", path: "/api/v1/users", token: narrow + "x"}, 401)
	a.expect(req{method: "GET", path: "/api/v1/chatbots", token: narrow}, 200) // the token itself still works
	a.login("sal@session.example", "correct horse")                            // the password did not change
}

// A wrong current password counts against the login limits (429 with Retry-After after
// five) and each is an audited event without password material.
func TestWrongCurrentPasswordsAreThrottledAndAudited(t *testing.T) {
	a := startApp(t)
	_, owner := a.register("Guess Co", "Gus", "gus@guess.example")
	guess := func(i int) req {
		pw := fmt.Sprintf("wrong guess %02d", i)
		return req{method: "PUT", path: "/api/v1/auth/password", token: owner,
			body: map[string]string{"current_password": pw, "password": "new password 1", "password_confirmation": "new password 1"}}
	}
	for i := range 5 {
		a.expectError(guess(i), 422, "VALIDATION_ERROR")
	}
	limited := a.expectError(guess(5), 429, "RATE_LIMITED")
	retry, err := strconv.Atoi(limited.Header.Get("Retry-After"))
	require.NoError(t, err)
	assert.Positive(t, retry)
	// The right password is refused too while the limit holds.
	a.expectError(req{method: "PUT", path: "/api/v1/auth/password", token: owner,
		body: map[string]string{"current_password": "correct horse", "password": "new password 1", "password_confirmation": "new password 1"}}, 429, "RATE_LIMITED")
	assert.Equal(t, 5, a.countEvents("access.password_change_failed"))
	var leaks int
	require.NoError(t, a.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM events
		WHERE (data::text || metadata::text) LIKE '%wrong guess%' OR (data::text || metadata::text) LIKE '%new password%'`).Scan(&leaks))
	assert.Zero(t, leaks, "no password material in the log")
	// The same limits as failed logins: logging in from here is held back too.
	a.expectError(req{method: "POST", path: "/api/v1/auth/login", body: map[string]string{"email": "gus@guess.example", "password": "correct horse"}},
		429, "RATE_LIMITED")
}

// Changing one's password ends every other session of the user at once, and says how
// many; the session that changed it goes on. A login that raced with it cannot survive
// with the old password.
func TestPasswordChangeEndsOtherSessions(t *testing.T) {
	a := startApp(t)
	a.register("Many Sessions", "Mo", "mo@sessions.example")
	current := a.login("mo@sessions.example", "correct horse")
	others := []tokens{a.login("mo@sessions.example", "correct horse"), a.login("mo@sessions.example", "correct horse")}
	for _, o := range others {
		a.expect(req{method: "GET", path: "/api/v1/auth/me", token: o.AccessToken}, 200)
	}
	res := a.expect(req{method: "PUT", path: "/api/v1/auth/password", token: current.AccessToken,
		body: map[string]string{"current_password": "correct horse", "password": "new password 1", "password_confirmation": "new password 1"}}, 200)
	var changed struct {
		SessionsEnded int `json:"sessions_ended"`
	}
	res.data(t, &changed)
	// register's own login, and the two others.
	assert.Equal(t, 3, changed.SessionsEnded)
	for _, o := range others {
		a.expectError(req{method: "GET", path: "/api/v1/auth/me", token: o.AccessToken}, 401, "UNAUTHENTICATED")
		a.expectError(req{method: "POST", path: "/api/v1/auth/refresh", body: map[string]string{"refresh_token": o.RefreshToken}}, 401, "UNAUTHENTICATED")
	}
	a.expect(req{method: "GET", path: "/api/v1/auth/me", token: current.AccessToken}, 200)
	a.expect(req{method: "POST", path: "/api/v1/auth/refresh", body: map[string]string{"refresh_token": current.RefreshToken}}, 200)
	a.expectError(req{method: "POST", path: "/api/v1/auth/login", body: map[string]string{"email": "mo@sessions.example", "password": "correct horse"}}, 401, "UNAUTHENTICATED")
	a.login("mo@sessions.example", "new password 1")
	var revoked int
	require.NoError(t, a.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM events
		WHERE type = 'session.revoked' AND data->>'reason' = 'password_changed'`).Scan(&revoked))
	assert.Equal(t, 3, revoked)
	assert.Equal(t, 1, a.countEvents("user.password_changed"))
}

// Acting on an owner (email, status, delete, roles) needs what granting the owner role
// needs, over every route that acts on a user and every kind of caller.
func TestActingOnAnOwnerNeedsWhatGrantingOwnerNeeds(t *testing.T) {
	a := startApp(t, "RATE_LIMIT_API_PER_MINUTE=10000")
	_, owner := a.register("Owned Co", "Olive", "olive@owned.example")
	target, _ := a.createUser(owner, "Second Owner", "second@owned.example", "owner", nil)
	member, _ := a.createUser(owner, "Plain Member", "member@owned.example", "member", nil)
	a.expect(req{method: "POST", path: "/api/v1/roles", token: owner,
		body: map[string]any{"name": "people-manager", "permissions": []string{"users.read", "users.write"}}}, 201)
	// A role every caller below may grant: acting on an owner is what is refused.
	a.expect(req{method: "POST", path: "/api/v1/roles", token: owner,
		body: map[string]any{"name": "reader", "permissions": []string{"users.read"}}}, 201)
	callers := map[string]string{}
	for _, role := range []string{"admin", "people-manager"} {
		email := role + "@owned.example"
		a.createUser(owner, role, email, role, nil)
		callers[role] = a.login(email, "password1").AccessToken
	}
	_, callers["owner's token (users.*)"] = a.apiToken(owner, "users.read", "users.write")

	actsOn := func(id string) []req {
		return []req{
			{method: "PATCH", path: "/api/v1/users/" + id, body: map[string]string{"email": "taken-over-" + uuid.NewString()[:6] + "@evil.example"}},
			{method: "PATCH", path: "/api/v1/users/" + id, body: map[string]string{"name": "Renamed"}},
			{method: "PATCH", path: "/api/v1/users/" + id, body: map[string]string{"status": "deactivated"}},
			{method: "PUT", path: "/api/v1/users/" + id + "/roles/reader"},
			{method: "DELETE", path: "/api/v1/users/" + id + "/roles/reader"},
			{method: "DELETE", path: "/api/v1/users/" + id},
		}
	}
	for name, token := range callers {
		for _, r := range actsOn(target.ID) {
			r.token = token
			res := a.expectError(r, 403, "FORBIDDEN")
			assert.Contains(t, res.Body.Message, "owner", "%s: %s %s", name, r.method, r.path)
		}
	}
	got := a.expect(req{method: "GET", path: "/api/v1/users/" + target.ID, token: owner}, 200)
	var u userJSON
	got.data(t, &u)
	assert.Equal(t, "second@owned.example", u.Email)
	assert.Equal(t, "active", u.Status)
	a.login("second@owned.example", "password1")

	// The same callers act on a member; an owner acts on an owner.
	for name, token := range callers {
		for i, r := range actsOn(member.ID)[:5] {
			r.token = token
			if i == 2 { // deactivate, then reactivate for the next caller
				a.expect(r, 200)
				r.body = map[string]string{"status": "active"}
			}
			res := a.do(r)
			assert.Equal(t, 200, res.Status, "%s: %s %s: %s", name, r.method, r.path, res.Raw)
		}
	}
	for _, r := range actsOn(target.ID) {
		r.token = owner
		a.expect(r, 200)
	}
}

// The consistency wait runs after authentication, only for the caller's own writes:
// an anonymous request is refused at once, and another tenant's stream is the same 400
// as a stream that does not exist.
func TestConsistencyWaitsOnlyForTheCallersOwnWrites(t *testing.T) {
	a := startApp(t)
	_, victim := a.register("Victim Co", "Vic", "vic@victim.example")
	made := a.expect(req{method: "POST", path: "/api/v1/chatbots", token: victim, body: map[string]any{"name": "Secret bot"}}, 201)
	token := made.Header.Get("X-Consistency-Token")
	require.NotEmpty(t, token)
	a.expect(req{method: "GET", path: "/api/v1/chatbots", token: victim, headers: map[string]string{"X-Consistency-Token": token}}, 200)

	unknown := fmt.Sprintf("chatbot:%s:1:999999", uuid.New())
	for _, tok := range []string{token, unknown} {
		res := a.expectError(req{method: "GET", path: "/api/v1/chatbots", headers: map[string]string{"X-Consistency-Token": tok}}, 401, "UNAUTHENTICATED")
		assert.Empty(t, res.Header.Get("X-Consistency"), "an anonymous request waited")
	}
	_, attacker := a.register("Attacker Co", "Ada", "ada@attacker.example")
	theirs := a.expectError(req{method: "GET", path: "/api/v1/chatbots", token: attacker, headers: map[string]string{"X-Consistency-Token": token}}, 400, "BAD_REQUEST")
	none := a.expectError(req{method: "GET", path: "/api/v1/chatbots", token: attacker, headers: map[string]string{"X-Consistency-Token": unknown}}, 400, "BAD_REQUEST")
	assert.Equal(t, none.Body.Message, theirs.Body.Message, "another tenant's stream looks like no stream")
}

// NUL in any string, and text PostgreSQL cannot store anywhere in a request, is a 400 in
// the envelope, never a 500; so is nesting deeper than any command needs.
func TestUnstorableTextIs400Everywhere(t *testing.T) {
	a := startApp(t, "RATE_LIMIT_PUBLIC_PER_MINUTE=10000", "RATE_LIMIT_API_PER_MINUTE=10000")
	_, owner := a.register("Nul Co", "Nel", "nel@nul.example")
	bodies := map[string]string{
		"POST /api/v1/auth/register": `{"organization_name":"A\u0000","name":"B","email":"nul@nul.example","password":"password1"}`,
		"POST /api/v1/auth/login":    `{"email":"nel@nul.example\u0000","password":"correct horse"}`,
		"POST /api/v1/auth/refresh":  `{"refresh_token":"\u0000"}`,
		"PUT /api/v1/auth/password":  `{"current_password":"correct horse","password":"pass\u0000word","password_confirmation":"pass\u0000word"}`,
		"POST /api/v1/users":         `{"name":"X\u0000","email":"x@nul.example","password":"password1","password_confirmation":"password1"}`,
		"POST /api/v1/chatbots":      `{"name":"Bot\u0000"}`,
		"POST /api/v1/roles":         `{"name":"r","permissions":["users.read\u0000"]}`,
		"POST /api/v1/webhooks":      `{"url":"https://example.com/\u0000","events":["user.*"]}`,
	}
	for route, body := range bodies {
		method, path, _ := strings.Cut(route, " ")
		res := a.expectError(req{method: method, path: path, token: owner, body: body}, 400, "BAD_REQUEST")
		assert.Contains(t, res.Body.Message, "NUL", route)
	}
	// Every route that takes a body, with NUL in a field of the right name: never a 500.
	params := map[string]string{"id": uuid.NewString(), "role": "viewer", "name": "no-such-role", "entry_id": uuid.NewString()}
	for _, rt := range apiRoutes(nil, nil, nil) {
		if rt.Method == http.MethodGet {
			continue
		}
		res := a.do(req{method: rt.Method, path: fill(rt.Path, params), token: owner,
			body: `{"name":"\u0000","email":"\u0000","content":"\u0000","question":"\u0000","answer":"\u0000","reason":"\u0000"}`})
		assert.Less(t, res.Status, 500, "%s %s: %s", rt.Method, rt.Path, res.Raw)
	}
	deep := `{"metadata":` + strings.Repeat(`{"a":`, 40) + `1` + strings.Repeat(`}`, 40) + `}`
	bot := a.expect(req{method: "POST", path: "/api/v1/chatbots", token: owner, body: map[string]any{"name": "Bot"}}, 201)
	var b struct{ ID string }
	bot.data(t, &b)
	a.expectError(req{method: "POST", path: "/api/v1/chatbots/" + b.ID + "/conversations", token: owner, body: deep}, 400, "BAD_REQUEST")
	for _, q := range []string{"search=%00", "search=%ff%fe", "status=%00"} {
		a.expectError(req{method: "GET", path: "/api/v1/users?" + q, token: owner}, 400, "BAD_REQUEST")
	}
	a.expectError(req{method: "POST", path: "/api/v1/chatbots", token: owner, body: map[string]any{"name": "Bot"},
		headers: map[string]string{"Idempotency-Key": "k\xff\xfe"}}, 422, "VALIDATION_ERROR")
	a.expect(req{method: "GET", path: "/api/v1/users?search=caf%C3%A9", token: owner}, 200)
}

// Answers carrying tokens are never stored by caches; no answer is sniffed.
func TestSecurityHeaders(t *testing.T) {
	a := startApp(t)
	a.register("Header Co", "Hal", "hal@header.example")
	login := a.expect(req{method: "POST", path: "/api/v1/auth/login", body: map[string]string{"email": "hal@header.example", "password": "correct horse"}}, 200)
	var tk tokens
	login.data(t, &tk)
	refresh := a.expect(req{method: "POST", path: "/api/v1/auth/refresh", body: map[string]string{"refresh_token": tk.RefreshToken}}, 200)
	created := a.expect(req{method: "POST", path: "/api/v1/tokens", token: tk.AccessToken, body: map[string]any{"name": "t", "abilities": []string{"users.read"}}}, 201)
	for name, r := range map[string]response{"login": login, "refresh": refresh, "token": created} {
		assert.Equal(t, "no-store", r.Header.Get("Cache-Control"), name)
	}
	for _, r := range []response{login, a.do(req{method: "GET", path: "/health"}), a.do(req{method: "GET", path: "/api/v1/nothing"}),
		a.do(req{method: "GET", path: "/api/v1/auth/me"})} {
		assert.Equal(t, "nosniff", r.Header.Get("X-Content-Type-Options"), string(r.Raw))
	}
}

// The per-email limit never locks out a client that logged in before (its device
// token); a client without one, and a forged token, are still limited.
func TestPerEmailLimitSparesKnownDevices(t *testing.T) {
	a := startApp(t, "TRUSTED_PROXIES=127.0.0.1", "LOGIN_FAILURES_PER_EMAIL_PER_MINUTE=10")
	a.register("Lockout Co", "Lou", "lou@lockout.example")
	a.register("Other Co", "Ola", "ola@other.example")
	other := a.expect(req{method: "POST", path: "/api/v1/auth/login", body: map[string]string{"email": "ola@other.example", "password": "correct horse"}}, 200)
	var od struct {
		DeviceToken string `json:"device_token"`
	}
	other.data(t, &od)
	first := a.expect(req{method: "POST", path: "/api/v1/auth/login", headers: map[string]string{"X-Forwarded-For": "198.51.100.200"},
		body: map[string]string{"email": "lou@lockout.example", "password": "correct horse"}}, 200)
	var tk tokens
	first.data(t, &tk)
	var device struct {
		DeviceToken string `json:"device_token"`
	}
	first.data(t, &device)
	require.NotEmpty(t, device.DeviceToken)
	cookie := ""
	for _, c := range (&http.Response{Header: first.Header}).Cookies() {
		if c.Name == "chatbotd_device" {
			cookie = c.Name + "=" + c.Value
			assert.True(t, c.HttpOnly)
			assert.True(t, c.Secure)
			assert.Equal(t, http.SameSiteStrictMode, c.SameSite)
		}
	}
	require.NotEmpty(t, cookie)

	// The attacker fails from 30 addresses, 2 each: the per-email limit is reached.
	for i := range 30 {
		for range 2 {
			a.do(req{method: "POST", path: "/api/v1/auth/login", headers: map[string]string{"X-Forwarded-For": fmt.Sprintf("203.0.113.%d", i)},
				body: map[string]string{"email": "lou@lockout.example", "password": "wrong password"}})
		}
	}
	victim := map[string]string{"X-Forwarded-For": "198.51.100.200"}
	login := func(extra map[string]string, body map[string]string) response {
		h := map[string]string{}
		for k, v := range victim {
			h[k] = v
		}
		for k, v := range extra {
			h[k] = v
		}
		return a.do(req{method: "POST", path: "/api/v1/auth/login", headers: h, body: body})
	}
	right := map[string]string{"email": "lou@lockout.example", "password": "correct horse"}
	assert.Equal(t, 429, login(nil, right).Status, "a new device is held back")
	forged := map[string]string{"email": "lou@lockout.example", "password": "correct horse", "device_token": device.DeviceToken[:len(device.DeviceToken)-3] + "AAA"}
	assert.Equal(t, 429, login(nil, forged).Status, "a forged device token counts for nothing")
	otherEmails := map[string]string{"email": "lou@lockout.example", "password": "correct horse", "device_token": od.DeviceToken}
	assert.Equal(t, 429, login(nil, otherEmails).Status, "another email's device token is no pass for this one")
	withToken := map[string]string{"email": "lou@lockout.example", "password": "correct horse", "device_token": device.DeviceToken}
	for range 5 {
		assert.Equal(t, 200, login(nil, withToken).Status, "the known device logs in")
	}
	assert.Equal(t, 200, login(map[string]string{"Cookie": cookie}, right).Status, "with the device cookie too")
	// Throttled logins append a bounded number of events: one a minute per email.
	assert.Equal(t, 1, a.countEvents("login.rate_limited"))
}

// The idempotency table holds no secret in the clear: the request hash is keyed, and the
// stored answer (here with a generated webhook secret) is sealed, yet replayed whole.
func TestIdempotencyRecordsHoldNoSecrets(t *testing.T) {
	a := startApp(t, "ALLOW_PRIVATE_TARGETS=true")
	_, owner := a.register("Idem Co", "Ida", "ida@idem.example")
	key := map[string]string{"Idempotency-Key": "hook-1"}
	body := `{"url":"http://127.0.0.1:9/hook","events":["organization.suspended"]}` // an event that never fires here
	first := a.expect(req{method: "POST", path: "/api/v1/webhooks", token: owner, headers: key, body: body}, 201)
	var hook struct{ ID, Secret string }
	first.data(t, &hook)
	require.True(t, strings.HasPrefix(hook.Secret, "whsec_"), string(first.Raw))
	again := a.expect(req{method: "POST", path: "/api/v1/webhooks", token: owner, headers: key, body: body}, 201)
	assert.Equal(t, "true", again.Header.Get("Idempotent-Replayed"))
	assert.JSONEq(t, string(first.Body.Data), string(again.Body.Data), "the replay carries the same secret")

	userBody := `{"name":"Pat","email":"pat@idem.example","password":"a guessable password","password_confirmation":"a guessable password"}`
	a.expect(req{method: "POST", path: "/api/v1/users", token: owner, headers: map[string]string{"Idempotency-Key": "user-1"}, body: userBody}, 201)

	rows, err := a.db.Pool.Query(context.Background(), `SELECT key, request_hash, body FROM idempotency_keys`)
	require.NoError(t, err)
	defer rows.Close()
	seen := 0
	for rows.Next() {
		var k string
		var hash, stored []byte
		require.NoError(t, rows.Scan(&k, &hash, &stored))
		seen++
		assert.NotContains(t, string(stored), hook.Secret, k)
		assert.NotContains(t, string(stored), `"success"`, "%s: the answer is stored sealed", k)
		for _, path := range []string{"/api/v1/webhooks", "/api/v1/users"} {
			for _, b := range []string{body, userBody} {
				plain := sha256.Sum256([]byte("POST " + path + "\n" + b))
				assert.NotEqual(t, plain[:], hash, "%s: an unkeyed hash can be tested against guesses", k)
			}
		}
	}
	require.NoError(t, rows.Err())
	assert.Equal(t, 2, seen)
}

// In production, a key left unset refuses the start and names the key.
func TestProductionRefusesToStartWithoutKeys(t *testing.T) {
	m := &Main{Stdout: &syncWriter{}, Stderr: &syncWriter{}, Environ: []string{"APP_ENV=production",
		"SECRETS_KEY=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}}
	err := m.Run(context.Background(), []string{"serve"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "JWT_SIGNING_KEYS must be set when APP_ENV=production")
	assert.Contains(t, err.Error(), "AUDIT_SIGNING_KEY must be set when APP_ENV=production")
	assert.NotContains(t, err.Error(), "SECRETS_KEY")
}

// A serve that fails after starting its workers (here: its address is taken) returns
// only when every worker has stopped: none outlives it or uses its closed connections.
func TestServeWaitsForItsWorkersWhenItFailsToStart(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	a := startApp(t) // for the database and broker only
	env := append([]string{}, a.env...)
	env = append(env, "HTTP_ADDR="+taken.Addr().String())
	before := ownGoroutines()
	m := &Main{Stdout: &syncWriter{}, Stderr: &syncWriter{}, Environ: env}
	err = m.Run(context.Background(), []string{"serve"})
	require.ErrorContains(t, err, "listen on")
	after := ownGoroutines()
	assert.LessOrEqual(t, after, before, "goroutines of the failed serve outlived it")
}

// ownGoroutines counts the goroutines that chatbotd's main package started.
func ownGoroutines() int {
	buf := make([]byte, 1<<22)
	return strings.Count(string(buf[:runtime.Stack(buf, true)]), "\ncreated by main.")
}

// The first error of a worker ends serve; the others never block their goroutines, so
// stopping always completes.
func TestWorkersNeverBlockOnFailures(t *testing.T) {
	w := newWorkers(context.Background(), testLogger())
	for i := range 50 {
		w.start(fmt.Sprint("worker ", i), func(context.Context) error { return fmt.Errorf("broken %d", i) })
	}
	select {
	case err := <-w.failed:
		assert.ErrorContains(t, err, "broken")
	case <-time.After(10 * time.Second):
		t.Fatal("no failure reported")
	}
	stopped := make(chan struct{})
	go func() { w.stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("stop blocked: failing workers are stuck")
	}
}

func testLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// brokerUnavailable is what an operator sees when the broker cannot answer: no AMQP text.
func TestBrokerErrorsLeakNothing(t *testing.T) {
	a := startApp(t)
	_, op := a.operator("pat@platform.example")
	a.amqp.Cut()
	defer a.amqp.Restore()
	res := a.expectError(req{method: "GET", path: "/api/v1/admin/projections/accounts/dead-letters", token: op}, 503, "SERVICE_UNAVAILABLE")
	assert.Equal(t, "The message broker did not answer", res.Body.Message)
	raw := strings.ToLower(string(res.Raw))
	for _, leak := range []string{"amqp", "exception", "channel", "connection", "queue"} {
		assert.NotContains(t, raw, leak)
	}
}
