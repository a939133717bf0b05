package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
	"github.com/chatbotsaas/chatbotd/projections"
	"github.com/chatbotsaas/chatbotd/projections/reactors"
)

// app is the whole program started in-process on :0, its database and broker behind
// proxies the test can cut.
type app struct {
	t      *testing.T
	base   string
	db     testenv.Database
	mq     *testenv.AMQP
	pg     *testenv.Proxy
	amqp   *testenv.Proxy
	stop   context.CancelFunc
	done   chan error
	client *http.Client
	logs   func() string // what chatbotd logged so far
	env    []string      // chatbotd's environment, for running its other commands
}

// partNames are the names of the registry's parts.
func partNames() []string {
	var out []string
	for _, p := range projections.Parts() {
		out = append(out, p.Name)
	}
	return out
}

func startApp(t *testing.T, extraEnv ...string) *app {
	t.Helper()
	return startAppWith(t, []string{"serve"}, extraEnv...)
}

// startAppWith is startApp running chatbotd with args (serve and its flags).
func startAppWith(t *testing.T, args []string, extraEnv ...string) *app {
	t.Helper()
	d := testenv.MustDatabase(t)
	r := testenv.MustRedis(t)
	a := testenv.MustAMQP(t)
	// Every queue the process may declare: the registry's parts' (a projector's is its
	// dead-letter queue, or its own queue of an earlier layout) and the projectors'
	// shared one.
	for _, name := range append(partNames(), projections.GroupName) {
		a.Queue(name) // removed at the end, with its dead letters
		for _, e := range extraEnv {
			if v, ok := strings.CutPrefix(e, "PROJECTOR_PARTITIONS="); ok {
				n, err := strconv.Atoi(v)
				require.NoError(t, err)
				a.Partitioned(name, n)
			}
		}
	}
	pg := testenv.MustProxy(t, "127.0.0.1:5432")
	mq := testenv.MustProxy(t, "127.0.0.1:5672")
	dbURL := strings.Replace(d.URL, "127.0.0.1:5432", pg.Addr(), 1)
	amqpURL := strings.Replace(a.URL, "127.0.0.1:5672", mq.Addr(), 1)
	env := []string{
		"DATABASE_URL=" + dbURL, "REDIS_URL=" + r.URL, "REDIS_PREFIX=" + r.Prefix,
		"AMQP_URL=" + amqpURL, "AMQP_EXCHANGE=" + a.Exchange, "AMQP_QUEUE_PREFIX=" + a.QueuePrefix,
		"HTTP_ADDR=127.0.0.1:0", "LOG_LEVEL=debug", "PASSWORD_HASH_CONCURRENCY=2",
	}
	env = append(env, extraEnv...)
	logs := &syncWriter{}
	base, cancel, done := serve(t, &Main{Stdout: logs, Stderr: io.Discard, Environ: env}, args...)
	app := &app{t: t, base: base, db: d, mq: a, pg: pg, amqp: mq, stop: cancel, done: done,
		client: &http.Client{Timeout: 15 * time.Second}, logs: logs.String, env: env}
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("chatbotd log:\n%s", logs.String())
		}
	})
	return app
}

// serve runs m with args (serve and its flags) and returns the address it listens on,
// what stops it, and the channel its end is reported on, once.
func serve(t *testing.T, m *Main, args ...string) (base string, stop context.CancelFunc, done chan error) {
	t.Helper()
	listening := make(chan string, 1)
	m.Listening = listening
	ctx, cancel := context.WithCancel(context.Background())
	done = make(chan error, 1)
	go func() { done <- m.Run(ctx, args) }()
	select {
	case addr := <-listening:
		return "http://" + addr, cancel, done
	case err := <-done:
		cancel()
		t.Fatalf("chatbotd %s exited: %v", strings.Join(args, " "), err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatalf("chatbotd %s did not start", strings.Join(args, " "))
	}
	return "", cancel, done
}

// cli runs one of chatbotd's commands (not serve) against the app's database and broker,
// with stdin, and returns its stdout.
func (a *app) cli(stdin string, args ...string) (string, error) {
	a.t.Helper()
	var out, errOut bytes.Buffer
	m := &Main{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errOut, Environ: a.env}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := m.Run(ctx, args)
	if err != nil {
		a.t.Logf("chatbotd %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String(), err
}

// redeliver publishes envs again straight to one of the app's queues (by its name
// without the prefix), as a broker redelivering them would.
func (a *app) redeliver(queue string, envs []events.Envelope) {
	a.t.Helper()
	conn, err := amqp091.Dial(a.mq.URL)
	require.NoError(a.t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(a.t, err)
	for _, e := range envs {
		body, err := json.Marshal(e)
		require.NoError(a.t, err)
		require.NoError(a.t, ch.Publish("", a.mq.QueuePrefix+queue, false, false,
			amqp091.Publishing{ContentType: "application/json", MessageId: e.ID.String(), Body: body}))
	}
}

// syncWriter is the app's log: written by many goroutines, read by tests.
type syncWriter struct {
	mu sync.Mutex
	w  bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.String()
}

// response is a decoded answer.
type response struct {
	Status int
	Header http.Header
	Raw    []byte
	Body   struct {
		Success   bool                `json:"success"`
		Message   string              `json:"message"`
		Data      json.RawMessage     `json:"data"`
		Meta      map[string]any      `json:"meta"`
		ErrorCode string              `json:"error_code"`
		Errors    map[string][]string `json:"errors"`
		RequestID string              `json:"request_id"`
		Timestamp string              `json:"timestamp"`
	}
}

func (r response) data(t *testing.T, v any) {
	t.Helper()
	require.NoError(t, json.Unmarshal(r.Body.Data, v), string(r.Raw))
}

type req struct {
	method, path string
	body         any // string: sent as is
	token        string
	headers      map[string]string
}

// request is r as an HTTP request to the server at base.
func (r req) request(base string) (*http.Request, error) {
	var body io.Reader
	switch b := r.body.(type) {
	case nil:
	case string:
		body = strings.NewReader(b)
	case []byte:
		body = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(j)
	}
	hr, err := http.NewRequest(r.method, base+r.path, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	if r.token != "" {
		hr.Header.Set("Authorization", "Bearer "+r.token)
	}
	for k, v := range r.headers {
		hr.Header.Set(k, v)
	}
	return hr, nil
}

func (a *app) do(r req) response {
	a.t.Helper()
	hr, err := r.request(a.base)
	require.NoError(a.t, err)
	res, err := a.client.Do(hr)
	require.NoError(a.t, err)
	defer res.Body.Close()
	out := response{Status: res.StatusCode, Header: res.Header}
	out.Raw, err = io.ReadAll(res.Body)
	require.NoError(a.t, err)
	if len(out.Raw) > 0 && strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") {
		require.NoError(a.t, json.Unmarshal(out.Raw, &out.Body), string(out.Raw))
	}
	return out
}

func (a *app) expect(r req, status int) response {
	a.t.Helper()
	res := a.do(r)
	require.Equal(a.t, status, res.Status, "%s %s: %s", r.method, r.path, res.Raw)
	return res
}

func (a *app) expectError(r req, status int, code string) response {
	a.t.Helper()
	res := a.expect(r, status)
	assert.False(a.t, res.Body.Success)
	assert.Equal(a.t, code, res.Body.ErrorCode, string(res.Raw))
	assert.NotEmpty(a.t, res.Body.RequestID)
	return res
}

type userJSON struct {
	ID             string   `json:"id"`
	OrganizationID string   `json:"organization_id"`
	Name           string   `json:"name"`
	Email          string   `json:"email"`
	Status         string   `json:"status"`
	Roles          []string `json:"roles"`
	CreatedAt      string   `json:"created_at"`
	UpdatedAt      string   `json:"updated_at"`
}

type tokens struct {
	AccessToken  string    `json:"access_token"`
	RefreshToken string    `json:"refresh_token"`
	TokenType    string    `json:"token_type"`
	ExpiresIn    int       `json:"expires_in"`
	User         *userJSON `json:"user"`
}

func (a *app) register(org, name, email string) (userJSON, string) {
	a.t.Helper()
	res := a.expect(req{method: "POST", path: "/api/v1/auth/register",
		body: map[string]string{"organization_name": org, "name": name, "email": email, "password": "correct horse"}}, 201)
	var out struct {
		User         userJSON `json:"user"`
		Organization struct {
			ID   string `json:"id"`
			Slug string `json:"slug"`
		} `json:"organization"`
	}
	res.data(a.t, &out)
	return out.User, a.login(email, "correct horse").AccessToken
}

func (a *app) login(email, password string) tokens {
	a.t.Helper()
	res := a.expect(req{method: "POST", path: "/api/v1/auth/login", body: map[string]string{"email": email, "password": password}}, 200)
	var tk tokens
	res.data(a.t, &tk)
	return tk
}

func (a *app) createUser(token, name, email, role string, headers map[string]string) (userJSON, response) {
	a.t.Helper()
	res := a.expect(req{method: "POST", path: "/api/v1/users", token: token, headers: headers,
		body: map[string]string{"name": name, "email": email, "password": "password1", "password_confirmation": "password1", "role": role}}, 201)
	var u userJSON
	res.data(a.t, &u)
	return u, res
}

// consistent reads with the command's consistency token.
func consistent(res response) map[string]string {
	return map[string]string{"X-Consistency-Token": res.Header.Get("X-Consistency-Token")}
}

func TestEndToEndAccountsSlice(t *testing.T) {
	a := startApp(t)

	// Operations.
	health := a.expect(req{method: "GET", path: "/health"}, 200)
	var store string
	require.NoError(t, a.db.Pool.QueryRow(context.Background(), `SELECT id::text FROM store_identity`).Scan(&store))
	assert.JSONEq(t, `{"status":"healthy","services":{"database":"up","redis":"up","broker":"up"},"store_id":"`+store+`"}`,
		string(health.Body.Data))
	a.expect(req{method: "GET", path: "/ready"}, 200)
	jwks := a.expect(req{method: "GET", path: "/.well-known/jwks.json"}, 200)
	assert.Contains(t, string(jwks.Raw), `"alg":"EdDSA"`)
	a.expect(req{method: "GET", path: "/api/v1/openapi.json"}, 200)

	// Request ids: a good one is echoed, a bad one replaced.
	rid := a.do(req{method: "GET", path: "/health", headers: map[string]string{"X-Request-ID": "abc.DEF-123_x"}})
	assert.Equal(t, "abc.DEF-123_x", rid.Header.Get("X-Request-ID"))
	assert.Equal(t, "abc.DEF-123_x", rid.Body.RequestID)
	bad := a.do(req{method: "GET", path: "/health", headers: map[string]string{"X-Request-ID": "no spaces allowed"}})
	assert.NotEqual(t, "no spaces allowed", bad.Header.Get("X-Request-ID"))
	assert.Equal(t, bad.Header.Get("X-Request-ID"), bad.Body.RequestID)

	// Register, and the same email in another case is taken.
	owner, ownerToken := a.register("Acme Café", "Ann Owner", "Ann@Example.com")
	assert.Equal(t, "ann@example.com", owner.Email)
	assert.Equal(t, []string{"owner"}, owner.Roles)
	a.expectError(req{method: "POST", path: "/api/v1/auth/register",
		body: map[string]string{"organization_name": "Other", "name": "X", "email": "ANN@example.com", "password": "12345678"}}, 409, "EMAIL_TAKEN")

	// Login failures look alike.
	badPw := a.expectError(req{method: "POST", path: "/api/v1/auth/login", body: map[string]string{"email": "ann@example.com", "password": "wrong password"}}, 401, "UNAUTHENTICATED")
	unknown := a.expectError(req{method: "POST", path: "/api/v1/auth/login", body: map[string]string{"email": "nobody@example.com", "password": "wrong password"}}, 401, "UNAUTHENTICATED")
	assert.Equal(t, badPw.Body.Message, unknown.Body.Message)

	// Me.
	me := a.expect(req{method: "GET", path: "/api/v1/auth/me", token: ownerToken}, 200)
	var meData struct {
		userJSON
		Permissions []string `json:"permissions"`
	}
	me.data(t, &meData)
	assert.Equal(t, owner.ID, meData.ID)
	assert.Contains(t, meData.Permissions, "organization.write")
	a.expectError(req{method: "GET", path: "/api/v1/auth/me"}, 401, "UNAUTHENTICATED")
	a.expectError(req{method: "GET", path: "/api/v1/auth/me", token: "not.a.jwt"}, 401, "UNAUTHENTICATED")

	// Create with an idempotency key; a repeat replays; the key with another body is refused.
	idem := map[string]string{"Idempotency-Key": "create-bob-1"}
	bob, created := a.createUser(ownerToken, "Bob Builder", "bob@example.com", "member", idem)
	replay := a.expect(req{method: "POST", path: "/api/v1/users", token: ownerToken, headers: idem,
		body: map[string]string{"name": "Bob Builder", "email": "bob@example.com", "password": "password1", "password_confirmation": "password1", "role": "member"}}, 201)
	assert.Equal(t, string(created.Raw), string(replay.Raw))
	assert.Equal(t, "true", replay.Header.Get("Idempotent-Replayed"))
	a.expectError(req{method: "POST", path: "/api/v1/users", token: ownerToken, headers: idem,
		body: map[string]string{"name": "Someone Else", "email": "else@example.com", "password": "password1", "password_confirmation": "password1"}}, 422, "VALIDATION_ERROR")

	// Read your write: the same JSON as the command answered.
	assert.Equal(t, float64(1), created.Body.Meta["stream_version"])
	assert.NotZero(t, created.Body.Meta["position"])
	got := a.expect(req{method: "GET", path: "/api/v1/users/" + bob.ID, token: ownerToken, headers: consistent(created)}, 200)
	assert.JSONEq(t, string(created.Body.Data), string(got.Body.Data))

	// Lists: pagination, filters, sort, search.
	carol, _ := a.createUser(ownerToken, "Carol Admin", "carol@example.com", "admin", nil)
	_, last := a.createUser(ownerToken, "Dave Viewer", "dave@example.com", "viewer", nil)
	list := a.expect(req{method: "GET", path: "/api/v1/users?sort=-name&per_page=2", token: ownerToken, headers: consistent(last)}, 200)
	var users []userJSON
	list.data(t, &users)
	require.Len(t, users, 2)
	assert.Equal(t, []string{"Dave Viewer", "Carol Admin"}, []string{users[0].Name, users[1].Name})
	assert.Equal(t, map[string]any{"page": float64(1), "per_page": float64(2), "total": float64(4), "last_page": float64(2)}, list.Body.Meta["pagination"])
	list = a.expect(req{method: "GET", path: "/api/v1/users?role=admin", token: ownerToken}, 200)
	list.data(t, &users)
	require.Len(t, users, 1)
	assert.Equal(t, carol.ID, users[0].ID)
	list = a.expect(req{method: "GET", path: "/api/v1/users?search=" + url.QueryEscape("BUILD"), token: ownerToken}, 200)
	list.data(t, &users)
	require.Len(t, users, 1)
	assert.Equal(t, bob.ID, users[0].ID)
	list = a.expect(req{method: "GET", path: "/api/v1/users?per_page=1000&search=%25", token: ownerToken}, 200)
	assert.Equal(t, float64(100), list.Body.Meta["pagination"].(map[string]any)["per_page"])
	list.data(t, &users)
	assert.Empty(t, users, "search treats % literally")
	v := a.expectError(req{method: "GET", path: "/api/v1/users?per_page=0&sort=password&status=gone", token: ownerToken}, 422, "VALIDATION_ERROR")
	assert.Contains(t, v.Body.Errors, "per_page")
	assert.Contains(t, v.Body.Errors, "sort")
	assert.Contains(t, v.Body.Errors, "status")

	// check-email.
	ce := a.expect(req{method: "GET", path: "/api/v1/users/check-email?email=BOB@example.com", token: ownerToken}, 200)
	assert.JSONEq(t, `{"email":"bob@example.com","exists":true}`, string(ce.Body.Data))
	a.expectError(req{method: "GET", path: "/api/v1/users/check-email?email=nope", token: ownerToken}, 422, "VALIDATION_ERROR")

	// If-Match: stale is 409, current goes through.
	a.expectError(req{method: "PATCH", path: "/api/v1/users/" + bob.ID, token: ownerToken, headers: map[string]string{"If-Match": "7"},
		body: map[string]string{"name": "Robert"}}, 409, "CONFLICT")
	patched := a.expect(req{method: "PATCH", path: "/api/v1/users/" + bob.ID, token: ownerToken, headers: map[string]string{"If-Match": `"1"`},
		body: map[string]string{"name": "Robert", "email": "Robert@Example.com"}}, 200)
	assert.Equal(t, float64(2), patched.Body.Meta["stream_version"])
	got = a.expect(req{method: "GET", path: "/api/v1/users/" + bob.ID, token: ownerToken, headers: consistent(patched)}, 200)
	assert.JSONEq(t, string(patched.Body.Data), string(got.Body.Data))
	// The old email is free, the new one taken.
	a.createUser(ownerToken, "New Bob", "bob@example.com", "member", nil)
	a.expectError(req{method: "POST", path: "/api/v1/users", token: ownerToken,
		body: map[string]string{"name": "X", "email": "robert@example.com", "password": "password1", "password_confirmation": "password1"}}, 409, "EMAIL_TAKEN")

	// Roles: a member cannot create users; roles change permissions at the next request.
	bobToken := a.login("robert@example.com", "password1").AccessToken
	a.expectError(req{method: "POST", path: "/api/v1/users", token: bobToken,
		body: map[string]string{"name": "X", "email": "x@example.com", "password": "password1", "password_confirmation": "password1"}}, 403, "FORBIDDEN")
	assigned := a.expect(req{method: "PUT", path: "/api/v1/users/" + bob.ID + "/roles/admin", token: ownerToken}, 200)
	a.expect(req{method: "GET", path: "/api/v1/users/" + bob.ID, token: ownerToken, headers: consistent(assigned)}, 200)
	testenv.Eventually(t, 5*time.Second, func() error {
		if r := a.do(req{method: "GET", path: "/api/v1/auth/me", token: bobToken}); !strings.Contains(string(r.Raw), "users.write") {
			return fmt.Errorf("role not in effect: %s", r.Raw)
		}
		return nil
	})
	// An admin cannot grant owner, which has a permission admins lack.
	a.expectError(req{method: "PUT", path: "/api/v1/users/" + carol.ID + "/roles/owner", token: bobToken}, 403, "FORBIDDEN")
	a.expectError(req{method: "PUT", path: "/api/v1/users/" + carol.ID + "/roles/wizard", token: ownerToken}, 404, "NOT_FOUND")

	// Deactivating stops a user's tokens; deleting hides them.
	carolToken := a.login("carol@example.com", "password1").AccessToken
	a.expect(req{method: "GET", path: "/api/v1/auth/me", token: carolToken}, 200)
	deact := a.expect(req{method: "PATCH", path: "/api/v1/users/" + carol.ID, token: ownerToken, body: map[string]string{"status": "deactivated"}}, 200)
	a.expect(req{method: "GET", path: "/api/v1/users/" + carol.ID, token: ownerToken, headers: consistent(deact)}, 200)
	a.expectError(req{method: "GET", path: "/api/v1/auth/me", token: carolToken}, 401, "UNAUTHENTICATED")
	a.expectError(req{method: "POST", path: "/api/v1/auth/login", body: map[string]string{"email": "carol@example.com", "password": "password1"}}, 401, "UNAUTHENTICATED")
	a.expectError(req{method: "PATCH", path: "/api/v1/users/" + owner.ID, token: ownerToken, body: map[string]string{"status": "deactivated"}}, 422, "VALIDATION_ERROR")
	del := a.expect(req{method: "DELETE", path: "/api/v1/users/" + carol.ID, token: ownerToken}, 200)
	a.expectError(req{method: "GET", path: "/api/v1/users/" + carol.ID, token: ownerToken, headers: consistent(del)}, 404, "NOT_FOUND")
	a.expectError(req{method: "DELETE", path: "/api/v1/users/" + carol.ID, token: ownerToken}, 404, "NOT_FOUND")
	a.createUser(ownerToken, "Carol Again", "carol@example.com", "member", nil)

	// Tenancy: another organization's user is NOT_FOUND.
	_, otherToken := a.register("Globex", "Gary", "gary@globex.example")
	a.expectError(req{method: "GET", path: "/api/v1/users/" + bob.ID, token: otherToken}, 404, "NOT_FOUND")
	a.expectError(req{method: "PATCH", path: "/api/v1/users/" + bob.ID, token: otherToken, body: map[string]string{"name": "x"}}, 404, "NOT_FOUND")
	list = a.expect(req{method: "GET", path: "/api/v1/users?search=robert", token: otherToken}, 200)
	list.data(t, &users)
	assert.Empty(t, users)
	ce = a.expect(req{method: "GET", path: "/api/v1/users/check-email?email=robert@example.com", token: otherToken}, 200)
	assert.Contains(t, string(ce.Body.Data), `"exists":false`)

	// Organization.
	org := a.expect(req{method: "GET", path: "/api/v1/organization", token: ownerToken}, 200)
	assert.Contains(t, string(org.Body.Data), `"slug":"acme-cafe"`)
	orgPatch := a.expect(req{method: "PATCH", path: "/api/v1/organization", token: ownerToken, body: map[string]string{"name": "Acme Ltd", "slug": "acme-ltd"}}, 200)
	org = a.expect(req{method: "GET", path: "/api/v1/organization", token: ownerToken, headers: consistent(orgPatch)}, 200)
	assert.Contains(t, string(org.Body.Data), `"slug":"acme-ltd"`)
	a.expectError(req{method: "PATCH", path: "/api/v1/organization", token: otherToken, body: map[string]string{"slug": "acme-ltd"}}, 422, "VALIDATION_ERROR")
	a.expectError(req{method: "PATCH", path: "/api/v1/organization", token: bobToken, body: map[string]string{"name": "Mine"}}, 403, "FORBIDDEN")

	// Refresh rotation, reuse detection, logout.
	pair := a.login("ann@example.com", "correct horse")
	next := tokens{}
	a.expect(req{method: "POST", path: "/api/v1/auth/refresh", body: map[string]string{"refresh_token": pair.RefreshToken}}, 200).data(t, &next)
	assert.NotEqual(t, pair.RefreshToken, next.RefreshToken)
	a.expect(req{method: "GET", path: "/api/v1/auth/me", token: next.AccessToken}, 200)
	a.expectError(req{method: "POST", path: "/api/v1/auth/refresh", body: map[string]string{"refresh_token": pair.RefreshToken}}, 401, "UNAUTHENTICATED")
	a.expectError(req{method: "POST", path: "/api/v1/auth/refresh", body: map[string]string{"refresh_token": next.RefreshToken}}, 401, "UNAUTHENTICATED")
	testenv.Eventually(t, 5*time.Second, func() error {
		if r := a.do(req{method: "GET", path: "/api/v1/auth/me", token: next.AccessToken}); r.Status != 401 {
			return fmt.Errorf("revoked session still works: %d", r.Status)
		}
		return nil
	})
	a.expectError(req{method: "POST", path: "/api/v1/auth/refresh", body: map[string]string{"refresh_token": "rt1.forged.token.1.x"}}, 401, "UNAUTHENTICATED")
	pair = a.login("ann@example.com", "correct horse")
	out := a.expect(req{method: "POST", path: "/api/v1/auth/logout", token: pair.AccessToken}, 200)
	assert.NotEmpty(t, out.Header.Get("X-Consistency-Token"))
	a.expect(req{method: "GET", path: "/api/v1/auth/me", token: pair.AccessToken, headers: consistent(out)}, 401)
	a.expectError(req{method: "POST", path: "/api/v1/auth/refresh", body: map[string]string{"refresh_token": pair.RefreshToken}}, 401, "UNAUTHENTICATED")

	// Bad input changes nothing and answers in the envelope.
	a.expectError(req{method: "POST", path: "/api/v1/users", token: ownerToken, body: `{"name": "x",`}, 400, "BAD_REQUEST")
	a.expectError(req{method: "POST", path: "/api/v1/users", token: ownerToken, body: `{"name": 5}`}, 400, "BAD_REQUEST")
	a.expectError(req{method: "POST", path: "/api/v1/users", token: ownerToken, body: `[1,2]`}, 400, "BAD_REQUEST")
	unk := a.expectError(req{method: "POST", path: "/api/v1/users", token: ownerToken, body: `{"name":"x","is_admin":true}`}, 422, "VALIDATION_ERROR")
	assert.Contains(t, unk.Body.Errors, "is_admin")
	val := a.expectError(req{method: "POST", path: "/api/v1/users", token: ownerToken, body: `{"name":"","email":"bad","password":"short","password_confirmation":"x","role":"GOD!"}`}, 422, "VALIDATION_ERROR")
	for _, f := range []string{"name", "email", "password", "password_confirmation", "role"} {
		assert.Contains(t, val.Body.Errors, f)
	}
	a.expectError(req{method: "GET", path: "/api/v1/users/not-a-uuid", token: ownerToken}, 400, "BAD_REQUEST")
	a.expectError(req{method: "PATCH", path: "/api/v1/users/not-a-uuid", token: ownerToken, body: `{}`}, 400, "BAD_REQUEST")
	a.expectError(req{method: "PATCH", path: "/api/v1/users/" + bob.ID, token: ownerToken, headers: map[string]string{"If-Match": "abc"}, body: `{}`}, 400, "BAD_REQUEST")
	a.expectError(req{method: "GET", path: "/api/v1/users/" + bob.ID, token: ownerToken, headers: map[string]string{"X-Consistency-Token": "garbage"}}, 400, "BAD_REQUEST")
	big := `{"name":"` + strings.Repeat("a", 1<<20+10) + `"}`
	a.expectError(req{method: "POST", path: "/api/v1/users", token: ownerToken, body: big}, 413, "PAYLOAD_TOO_LARGE")
	a.expectError(req{method: "POST", path: "/api/v1/users", token: ownerToken, body: "name=x", headers: map[string]string{"Content-Type": "text/plain"}}, 415, "UNSUPPORTED_MEDIA_TYPE")
	a.expectError(req{method: "GET", path: "/api/v1/nothing-here", token: ownerToken}, 404, "NOT_FOUND")

	// Login answers (tokens) are never kept for Idempotency-Key replays.
	k := map[string]string{"Idempotency-Key": "login-1"}
	l1 := a.expect(req{method: "POST", path: "/api/v1/auth/login", headers: k, body: map[string]string{"email": "ann@example.com", "password": "correct horse"}}, 200)
	l2 := a.expect(req{method: "POST", path: "/api/v1/auth/login", headers: k, body: map[string]string{"email": "ann@example.com", "password": "correct horse"}}, 200)
	assert.NotEqual(t, string(l1.Body.Data), string(l2.Body.Data))
	var stored int
	require.NoError(t, a.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM idempotency_keys WHERE body::text LIKE '%access_token%'`).Scan(&stored))
	assert.Zero(t, stored)

	// Without trusted proxies, X-Forwarded-For is not believed: the audit metadata has
	// the TCP peer.
	a.expectError(req{method: "POST", path: "/api/v1/auth/login", headers: map[string]string{"X-Forwarded-For": "203.0.113.9"},
		body: map[string]string{"email": "spoof@example.com", "password": "whatever1"}}, 401, "UNAUTHENTICATED")
	var ip string
	require.NoError(t, a.db.Pool.QueryRow(context.Background(), `SELECT metadata->>'ip_address' FROM events
		WHERE type = 'login.failed' AND data->>'email' = 'spoof@example.com'`).Scan(&ip))
	assert.Equal(t, "127.0.0.1", ip)

	// A key left "in progress" by a request that died with its process is taken over
	// once it is older than any request can run.
	_, crashErr := a.db.Pool.Exec(context.Background(), `INSERT INTO idempotency_keys (scope, key, request_hash, created_at)
		SELECT scope, 'crashed', request_hash, now() - interval '2 minutes' FROM idempotency_keys WHERE key = 'create-bob-1'`)
	require.NoError(t, crashErr)
	a.createUser(ownerToken, "After Crash", "aftercrash@example.com", "member", map[string]string{"Idempotency-Key": "crashed"})

	// No secret or hash is in any event.
	var leaks int
	require.NoError(t, a.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM events
		WHERE data::text ILIKE '%argon2%' OR data::text LIKE '%correct horse%' OR data::text LIKE '%password1%'`).Scan(&leaks))
	assert.Zero(t, leaks)
	var failed int
	require.NoError(t, a.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE type = 'login.failed'`).Scan(&failed))
	assert.GreaterOrEqual(t, failed, 3)
}

func TestEndToEndOutagesAnswer503AndRecover(t *testing.T) {
	a := startApp(t)
	_, token := a.register("Outage Inc", "Olive", "olive@example.com")

	// PostgreSQL down: 503 on commands and queries and /health, no internals.
	a.pg.Cut()
	res := a.do(req{method: "POST", path: "/api/v1/users", token: token,
		body: map[string]string{"name": "Pat", "email": "pat@example.com", "password": "password1", "password_confirmation": "password1"}})
	assert.Equal(t, 503, res.Status, string(res.Raw))
	assert.Equal(t, "SERVICE_UNAVAILABLE", res.Body.ErrorCode)
	for _, leak := range []string{"dial", "tcp", "pgx", "SQL", "127.0.0.1"} {
		assert.NotContains(t, string(res.Raw), leak)
	}
	h := a.expect(req{method: "GET", path: "/health"}, 503)
	assert.Contains(t, string(h.Body.Data), `"database":"down"`)
	a.pg.Restore()
	testenv.Eventually(t, 15*time.Second, func() error {
		if r := a.do(req{method: "GET", path: "/health"}); r.Status != 200 {
			return fmt.Errorf("health %d", r.Status)
		}
		return nil
	})
	pat, _ := a.createUser(token, "Pat", "pat@example.com", "member", nil)

	// RabbitMQ down: /health says so, commands still succeed (the log is the truth), and
	// once it is back the relay publishes what was written meanwhile.
	a.amqp.Cut()
	testenv.Eventually(t, 15*time.Second, func() error {
		if r := a.do(req{method: "GET", path: "/health"}); !strings.Contains(string(r.Raw), `"broker":"down"`) || r.Status != 503 {
			return fmt.Errorf("health: %d %s", r.Status, r.Raw)
		}
		return nil
	})
	quinn, _ := a.createUser(token, "Quinn", "quinn@example.com", "member", nil)
	a.amqp.Restore()
	testenv.Eventually(t, 30*time.Second, func() error {
		if r := a.do(req{method: "GET", path: "/api/v1/users/" + quinn.ID, token: token}); r.Status != 200 {
			return fmt.Errorf("user written during the outage not projected: %d", r.Status)
		}
		return nil
	})
	a.expect(req{method: "GET", path: "/api/v1/users/" + pat.ID, token: token}, 200)
	a.expect(req{method: "GET", path: "/health"}, 200)
}

func TestServeShutsDownOnCancel(t *testing.T) {
	a := startApp(t)
	a.stop()
	select {
	case err := <-a.done:
		assert.NoError(t, err)
		a.done <- err // for the cleanup
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
	}
}

func TestConfigErrorIsOneClearLine(t *testing.T) {
	m := &Main{Stdout: io.Discard, Stderr: io.Discard, Environ: []string{"DATABASE_MAX_CONNS=1", "LOG_LEVEL=loud"}}
	err := m.Run(context.Background(), []string{"serve"})
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "\n")
	assert.Contains(t, err.Error(), "DATABASE_MAX_CONNS")
	assert.Contains(t, err.Error(), "LOG_LEVEL")
}

func TestLoginThrottling(t *testing.T) {
	a := startApp(t)
	a.register("Throttle Inc", "Tess", "tess@example.com")
	a.register("Other Inc", "Otto", "otto@example.com")
	for i := 0; i < 5; i++ {
		a.expectError(req{method: "POST", path: "/api/v1/auth/login", headers: map[string]string{"X-Forwarded-For": fmt.Sprintf("198.51.100.%d", i)},
			body: map[string]string{"email": "tess@example.com", "password": "wrong password"}}, 401, "UNAUTHENTICATED")
	}
	// The 6th attempt is refused before the password is checked, even with the right one
	// and yet another forged X-Forwarded-For.
	limited := a.expectError(req{method: "POST", path: "/api/v1/auth/login", headers: map[string]string{"X-Forwarded-For": "198.51.100.99"},
		body: map[string]string{"email": "tess@example.com", "password": "correct horse"}}, 429, "RATE_LIMITED")
	retry, err := strconv.Atoi(limited.Header.Get("Retry-After"))
	require.NoError(t, err)
	assert.Greater(t, retry, 0)
	// Another user's login is not slowed.
	a.login("otto@example.com", "correct horse")
	var n int
	require.NoError(t, a.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE type = 'login.rate_limited'`).Scan(&n))
	assert.Equal(t, 1, n)
}

func TestRateLimits(t *testing.T) {
	a := startApp(t, "RATE_LIMIT_API_PER_MINUTE=5", "RATE_LIMIT_PUBLIC_PER_MINUTE=4")
	_, token := a.register("Busy Inc", "Bea", "bea@example.com") // public calls 1 and 2
	for i := 0; i < 5; i++ {
		r := a.expect(req{method: "GET", path: "/api/v1/auth/me", token: token}, 200)
		assert.Equal(t, "5", r.Header.Get("X-RateLimit-Limit"))
		assert.Equal(t, strconv.Itoa(4-i), r.Header.Get("X-RateLimit-Remaining"))
	}
	r := a.expectError(req{method: "GET", path: "/api/v1/auth/me", token: token}, 429, "RATE_LIMITED")
	assert.NotEmpty(t, r.Header.Get("Retry-After"))
	// Unauthenticated calls are limited per client IP, whatever X-Forwarded-For says.
	a.expect(req{method: "GET", path: "/.well-known/jwks.json", headers: map[string]string{"X-Forwarded-For": "10.0.0.1"}}, 200)
	a.expect(req{method: "GET", path: "/.well-known/jwks.json", headers: map[string]string{"X-Forwarded-For": "10.0.0.2"}}, 200)
	a.expectError(req{method: "GET", path: "/.well-known/jwks.json", headers: map[string]string{"X-Forwarded-For": "10.0.0.3"}}, 429, "RATE_LIMITED")
	// Probes are never limited.
	for i := 0; i < 6; i++ {
		a.expect(req{method: "GET", path: "/health"}, 200)
	}
}

func TestAPITokens(t *testing.T) {
	a := startApp(t)
	owner, ownerToken := a.register("Token Co", "Tom", "tom@example.com")
	member, _ := a.createUser(ownerToken, "Mia", "mia@example.com", "member", nil)
	_ = member

	// A token with a narrower set of abilities.
	res := a.expect(req{method: "POST", path: "/api/v1/tokens", token: ownerToken,
		body: map[string]any{"name": "ci", "abilities": []string{"users.read"}}}, 201)
	var created struct {
		ID        string   `json:"id"`
		Token     string   `json:"token"`
		Abilities []string `json:"abilities"`
	}
	res.data(t, &created)
	require.True(t, strings.HasPrefix(created.Token, "cbt_"), created.Token)
	a.expect(req{method: "GET", path: "/api/v1/users", token: created.Token}, 200)
	a.expectError(req{method: "POST", path: "/api/v1/users", token: created.Token,
		body: map[string]string{"name": "X", "email": "x@example.com", "password": "password1", "password_confirmation": "password1"}}, 403, "FORBIDDEN")

	// The secret is shown once: lists never carry it, and the store keeps only a hash.
	list := a.expect(req{method: "GET", path: "/api/v1/tokens", token: ownerToken, headers: consistent(res)}, 200)
	assert.Contains(t, string(list.Raw), created.ID)
	assert.NotContains(t, string(list.Raw), created.Token[len(created.Token)-20:])
	var leaks int
	require.NoError(t, a.db.Pool.QueryRow(context.Background(), `SELECT
		(SELECT count(*) FROM events WHERE data::text LIKE '%' || $1 || '%') +
		(SELECT count(*) FROM idempotency_keys WHERE body::text LIKE '%cbt_%')`, created.Token[len(created.Token)-20:]).Scan(&leaks))
	assert.Zero(t, leaks)
	testenv.Eventually(t, 5*time.Second, func() error {
		var used *time.Time
		if err := a.db.Pool.QueryRow(context.Background(), `SELECT last_used_at FROM api_token_credentials WHERE token_id = $1`, created.ID).Scan(&used); err != nil || used == nil {
			return fmt.Errorf("last_used_at not recorded: %v", err)
		}
		return nil
	})

	// Nobody makes a token with a permission they do not hold; bad input is 422.
	memberLogin := a.login("mia@example.com", "password1")
	a.expectError(req{method: "POST", path: "/api/v1/tokens", token: memberLogin.AccessToken,
		body: map[string]any{"name": "x", "abilities": []string{"users.read"}}}, 403, "FORBIDDEN") // members lack tokens.write
	bad := a.expectError(req{method: "POST", path: "/api/v1/tokens", token: ownerToken,
		body: map[string]any{"name": "", "abilities": []string{"fly"}, "expires_at": "2001-01-01T00:00:00Z"}}, 422, "VALIDATION_ERROR")
	for _, f := range []string{"name", "abilities", "expires_at"} {
		assert.Contains(t, bad.Body.Errors, f)
	}

	// A token acts with its owner's current permissions: an admin's token with
	// users.write loses it when the admin becomes a viewer.
	admin, _ := a.createUser(ownerToken, "Ada", "ada@example.com", "admin", nil)
	adminLogin := a.login("ada@example.com", "password1")
	var adminTok struct {
		ID    string `json:"id"`
		Token string `json:"token"`
	}
	a.expect(req{method: "POST", path: "/api/v1/tokens", token: adminLogin.AccessToken,
		body: map[string]any{"name": "ops", "abilities": []string{"users.write", "users.read"}}}, 201).data(t, &adminTok)
	a.expect(req{method: "PUT", path: "/api/v1/users/" + admin.ID + "/roles/viewer", token: ownerToken}, 200)
	removed := a.expect(req{method: "DELETE", path: "/api/v1/users/" + admin.ID + "/roles/admin", token: ownerToken}, 200)
	a.expect(req{method: "GET", path: "/api/v1/users/" + admin.ID, token: ownerToken, headers: consistent(removed)}, 200)
	a.expectError(req{method: "DELETE", path: "/api/v1/users/" + owner.ID, token: adminTok.Token}, 403, "FORBIDDEN")
	a.expect(req{method: "GET", path: "/api/v1/users", token: adminTok.Token}, 200)

	// Deactivating the owner stops their tokens at once.
	deact := a.expect(req{method: "PATCH", path: "/api/v1/users/" + admin.ID, token: ownerToken, body: map[string]string{"status": "deactivated"}}, 200)
	a.expect(req{method: "GET", path: "/api/v1/users/" + admin.ID, token: ownerToken, headers: consistent(deact)}, 200)
	a.expectError(req{method: "GET", path: "/api/v1/users", token: adminTok.Token}, 401, "UNAUTHENTICATED")

	// Revoking stops a token at once; another user cannot revoke it.
	a.expectError(req{method: "DELETE", path: "/api/v1/tokens/" + created.ID, token: memberLogin.AccessToken}, 403, "FORBIDDEN")
	a.expect(req{method: "DELETE", path: "/api/v1/tokens/" + created.ID, token: ownerToken}, 200)
	a.expectError(req{method: "GET", path: "/api/v1/users", token: created.Token}, 401, "UNAUTHENTICATED")
	a.expectError(req{method: "DELETE", path: "/api/v1/tokens/" + created.ID, token: ownerToken}, 404, "NOT_FOUND")

	// Expired and forged tokens are refused.
	var expiring struct{ Token string }
	a.expect(req{method: "POST", path: "/api/v1/tokens", token: ownerToken,
		body: map[string]any{"name": "short", "abilities": []string{"users.read"}, "expires_at": time.Now().Add(1500 * time.Millisecond).UTC().Format(time.RFC3339Nano)}}, 201).data(t, &expiring)
	a.expect(req{method: "GET", path: "/api/v1/users", token: expiring.Token}, 200)
	time.Sleep(1600 * time.Millisecond)
	a.expectError(req{method: "GET", path: "/api/v1/users", token: expiring.Token}, 401, "UNAUTHENTICATED")
	forged := expiring.Token[:len(expiring.Token)-4] + "AAAA"
	a.expectError(req{method: "GET", path: "/api/v1/users", token: forged}, 401, "UNAUTHENTICATED")
	a.expectError(req{method: "GET", path: "/api/v1/users", token: "cbt_nonsense"}, 401, "UNAUTHENTICATED")

	var created2 int
	require.NoError(t, a.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE type IN ('token.created','token.revoked')`).Scan(&created2))
	assert.Equal(t, 4, created2)
}

func TestCustomRolesAndTheLastOwner(t *testing.T) {
	a := startApp(t)
	owner, ownerToken := a.register("Roles Co", "Rita", "rita@example.com")
	sam, _ := a.createUser(ownerToken, "Sam", "sam@example.com", "viewer", nil)
	samToken := a.login("sam@example.com", "password1").AccessToken

	// A custom role; built-in ones are immutable; names are unique per organization.
	created := a.expect(req{method: "POST", path: "/api/v1/roles", token: ownerToken,
		body: map[string]any{"name": "support", "permissions": []string{"users.read", "users.write"}}}, 201)
	a.expectError(req{method: "POST", path: "/api/v1/roles", token: ownerToken,
		body: map[string]any{"name": "support", "permissions": []string{"users.read"}}}, 422, "VALIDATION_ERROR")
	a.expectError(req{method: "POST", path: "/api/v1/roles", token: ownerToken,
		body: map[string]any{"name": "admin", "permissions": []string{"users.read"}}}, 422, "VALIDATION_ERROR")
	a.expectError(req{method: "PATCH", path: "/api/v1/roles/admin", token: ownerToken, body: map[string]any{"permissions": []string{"users.read"}}}, 403, "FORBIDDEN")
	a.expectError(req{method: "DELETE", path: "/api/v1/roles/owner", token: ownerToken}, 403, "FORBIDDEN")
	a.expectError(req{method: "POST", path: "/api/v1/roles", token: samToken,
		body: map[string]any{"name": "mine", "permissions": []string{"users.read"}}}, 403, "FORBIDDEN")
	roles := a.expect(req{method: "GET", path: "/api/v1/roles", token: ownerToken, headers: consistent(created)}, 200)
	assert.Contains(t, string(roles.Raw), `{"name":"support","builtin":false,"permissions":["users.read","users.write"]}`)

	// Assigning it gives its permissions at the next request; changing them too.
	a.expectError(req{method: "POST", path: "/api/v1/users", token: samToken,
		body: map[string]string{"name": "X", "email": "x@example.com", "password": "password1", "password_confirmation": "password1"}}, 403, "FORBIDDEN")
	assigned := a.expect(req{method: "PUT", path: "/api/v1/users/" + sam.ID + "/roles/support", token: ownerToken}, 200)
	a.expect(req{method: "GET", path: "/api/v1/users/" + sam.ID, token: ownerToken, headers: consistent(assigned)}, 200)
	a.createUser(samToken, "Made By Sam", "bysam@example.com", "viewer", nil)
	changed := a.expect(req{method: "PATCH", path: "/api/v1/roles/support", token: ownerToken, body: map[string]any{"permissions": []string{"users.read"}}}, 200)
	a.expect(req{method: "GET", path: "/api/v1/roles", token: ownerToken, headers: consistent(changed)}, 200)
	a.expectError(req{method: "POST", path: "/api/v1/users", token: samToken,
		body: map[string]string{"name": "Y", "email": "y@example.com", "password": "password1", "password_confirmation": "password1"}}, 403, "FORBIDDEN")

	// A held role cannot be deleted or renamed; an unknown one is 404; another
	// organization cannot see or use it.
	del := a.expectError(req{method: "DELETE", path: "/api/v1/roles/support", token: ownerToken}, 422, "VALIDATION_ERROR")
	assert.Contains(t, strings.Join(del.Body.Errors["name"], " "), "held by 1 user")
	a.expectError(req{method: "PATCH", path: "/api/v1/roles/support", token: ownerToken, body: map[string]any{"name": "helpdesk"}}, 422, "VALIDATION_ERROR")
	a.expectError(req{method: "PUT", path: "/api/v1/users/" + sam.ID + "/roles/nope", token: ownerToken}, 404, "NOT_FOUND")
	_, otherToken := a.register("Elsewhere", "Eve", "eve@example.com")
	a.expectError(req{method: "DELETE", path: "/api/v1/roles/support", token: otherToken}, 404, "NOT_FOUND")
	other := a.expect(req{method: "GET", path: "/api/v1/roles", token: otherToken}, 200)
	assert.NotContains(t, string(other.Raw), "support")

	// Once nobody holds it, it can be renamed and deleted.
	a.expect(req{method: "DELETE", path: "/api/v1/users/" + sam.ID + "/roles/support", token: ownerToken}, 200)
	a.expect(req{method: "PATCH", path: "/api/v1/roles/support", token: ownerToken, body: map[string]any{"name": "helpdesk"}}, 200)
	gone := a.expect(req{method: "DELETE", path: "/api/v1/roles/helpdesk", token: ownerToken}, 200)
	roles = a.expect(req{method: "GET", path: "/api/v1/roles", token: ownerToken, headers: consistent(gone)}, 200)
	assert.NotContains(t, string(roles.Raw), "helpdesk")

	// The last active owner stays: not removed, not deactivated, not deleted.
	a.expectError(req{method: "DELETE", path: "/api/v1/users/" + owner.ID + "/roles/owner", token: ownerToken}, 422, "VALIDATION_ERROR")
	second, _ := a.createUser(ownerToken, "Second Owner", "second@example.com", "owner", nil)
	secondToken := a.login("second@example.com", "password1").AccessToken
	a.expect(req{method: "DELETE", path: "/api/v1/users/" + owner.ID + "/roles/owner", token: secondToken}, 200)
	a.expectError(req{method: "PATCH", path: "/api/v1/users/" + second.ID, token: ownerToken, body: map[string]string{"status": "deactivated"}}, 403, "FORBIDDEN")
	a.expect(req{method: "PUT", path: "/api/v1/users/" + owner.ID + "/roles/owner", token: secondToken}, 200)
	a.expect(req{method: "PATCH", path: "/api/v1/users/" + owner.ID, token: secondToken, body: map[string]string{"status": "deactivated"}}, 200)
	last := a.expectError(req{method: "DELETE", path: "/api/v1/users/" + second.ID + "/roles/owner", token: secondToken}, 422, "VALIDATION_ERROR")
	assert.Contains(t, strings.Join(last.Body.Errors["role"], " "), "at least one active owner")
}

func TestChatbots(t *testing.T) {
	a := startApp(t)
	_, token := a.register("Bot Co", "Bo", "bo@example.com")
	viewer, _ := a.createUser(token, "Vi", "vi@example.com", "viewer", nil)
	_ = viewer
	viewerToken := a.login("vi@example.com", "password1").AccessToken

	res := a.expect(req{method: "POST", path: "/api/v1/chatbots", token: token,
		body: map[string]any{"name": "Support Bot", "description": "Answers billing questions", "welcome_message": "Hi!"}}, 201)
	var bot struct {
		ID              string         `json:"id"`
		Status          string         `json:"status"`
		FallbackMessage string         `json:"fallback_message"`
		Responder       map[string]any `json:"responder"`
	}
	res.data(t, &bot)
	assert.Equal(t, "draft", bot.Status)
	assert.NotEmpty(t, bot.FallbackMessage)
	assert.Equal(t, map[string]any{"type": "knowledge_base"}, bot.Responder)
	got := a.expect(req{method: "GET", path: "/api/v1/chatbots/" + bot.ID, token: viewerToken, headers: consistent(res)}, 200)
	assert.JSONEq(t, string(res.Body.Data), string(got.Body.Data))
	a.expectError(req{method: "POST", path: "/api/v1/chatbots", token: viewerToken, body: map[string]any{"name": "x"}}, 403, "FORBIDDEN")

	// A webhook responder: the secret is sealed beside the log, and shown nowhere.
	secret := "n8n-shared-secret-0123456789"
	up := a.expect(req{method: "PATCH", path: "/api/v1/chatbots/" + bot.ID, token: token, body: map[string]any{
		"responder": map[string]any{"type": "webhook", "url": "https://93.184.216.34/webhook/abc", "secret": secret}}}, 200)
	assert.NotContains(t, string(up.Raw), secret)
	assert.Contains(t, string(up.Raw), `"secret_set":true`)
	got = a.expect(req{method: "GET", path: "/api/v1/chatbots/" + bot.ID, token: token, headers: consistent(up)}, 200)
	assert.JSONEq(t, string(up.Body.Data), string(got.Body.Data))
	var leaks int
	require.NoError(t, a.db.Pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM events WHERE data::text LIKE '%' || $1 || '%')
		+ (SELECT count(*) FROM chatbots WHERE responder::text LIKE '%' || $1 || '%')
		+ (SELECT count(*) FROM chatbot_secrets WHERE position($1::bytea in sealed) > 0)`, secret).Scan(&leaks))
	assert.Zero(t, leaks)
	// Changing the URL keeps the stored secret; a webhook without any secret is refused.
	a.expect(req{method: "PATCH", path: "/api/v1/chatbots/" + bot.ID, token: token, body: map[string]any{
		"responder": map[string]any{"type": "webhook", "url": "https://93.184.216.35/webhook/abc"}}}, 200)
	v := a.expectError(req{method: "POST", path: "/api/v1/chatbots", token: token, body: map[string]any{
		"name": "x", "responder": map[string]any{"type": "webhook", "url": "https://93.184.216.34/"}}}, 422, "VALIDATION_ERROR")
	assert.Contains(t, v.Body.Errors, "responder.secret")

	// SSRF: targets that resolve to private, loopback or metadata addresses are refused.
	for _, target := range []string{"https://127.0.0.1/hook", "https://10.0.0.1/hook", "https://169.254.169.254/latest/meta-data",
		"https://[::1]/hook", "https://localhost/hook", "http://93.184.216.34/plain-http"} {
		r := a.expectError(req{method: "POST", path: "/api/v1/chatbots", token: token, body: map[string]any{
			"name": "evil", "responder": map[string]any{"type": "webhook", "url": target, "secret": secret}}}, 422, "VALIDATION_ERROR")
		assert.Contains(t, r.Body.Errors, "responder.url", target)
	}

	// Publish, list with filters and search, delete.
	a.expect(req{method: "POST", path: "/api/v1/chatbots", token: token, body: map[string]any{"name": "Sales Bot", "description": "Quotes and pricing"}}, 201)
	pub := a.expect(req{method: "POST", path: "/api/v1/chatbots/" + bot.ID + "/publish", token: token}, 200)
	a.expect(req{method: "POST", path: "/api/v1/chatbots/" + bot.ID + "/publish", token: token}, 200) // no change
	list := a.expect(req{method: "GET", path: "/api/v1/chatbots?status=published", token: token, headers: consistent(pub)}, 200)
	var bots []struct{ ID, Name, Status string }
	list.data(t, &bots)
	require.Len(t, bots, 1)
	assert.Equal(t, bot.ID, bots[0].ID)
	list = a.expect(req{method: "GET", path: "/api/v1/chatbots?search=billing", token: token}, 200)
	list.data(t, &bots)
	require.Len(t, bots, 1)
	assert.Equal(t, "Support Bot", bots[0].Name)
	list = a.expect(req{method: "GET", path: "/api/v1/chatbots?sort=-name", token: token}, 200)
	list.data(t, &bots)
	require.Len(t, bots, 2)
	assert.Equal(t, "Support Bot", bots[0].Name)
	a.expectError(req{method: "GET", path: "/api/v1/chatbots?status=live", token: token}, 422, "VALIDATION_ERROR")
	del := a.expect(req{method: "DELETE", path: "/api/v1/chatbots/" + bot.ID, token: token}, 200)
	a.expectError(req{method: "GET", path: "/api/v1/chatbots/" + bot.ID, token: token, headers: consistent(del)}, 404, "NOT_FOUND")
	a.expectError(req{method: "POST", path: "/api/v1/chatbots/" + bot.ID + "/publish", token: token}, 404, "NOT_FOUND")
}

func TestKnowledgeBase(t *testing.T) {
	a := startApp(t)
	_, token := a.register("Know Co", "Kay", "kay@example.com")
	var bot struct{ ID string }
	a.expect(req{method: "POST", path: "/api/v1/chatbots", token: token, body: map[string]any{"name": "KB Bot"}}, 201).data(t, &bot)
	base := "/api/v1/chatbots/" + bot.ID + "/knowledge"

	added := a.expect(req{method: "POST", path: base, token: token, body: map[string]any{
		"question": "How do I reset my password?", "answer": "Use the reset link on the login page.", "tags": []string{"account"}}}, 201)
	var entry struct{ ID string }
	added.data(t, &entry)
	list := a.expect(req{method: "GET", path: base, token: token, headers: consistent(added)}, 200)
	var entries []json.RawMessage
	list.data(t, &entries)
	require.Len(t, entries, 1)
	assert.JSONEq(t, string(added.Body.Data), string(entries[0]))

	upd := a.expect(req{method: "PATCH", path: base + "/" + entry.ID, token: token, body: map[string]any{
		"question": "How can I reset my password?", "answer": "Click 'Forgot password' on the login page."}}, 200)
	list = a.expect(req{method: "GET", path: base, token: token, headers: consistent(upd)}, 200)
	list.data(t, &entries)
	require.Len(t, entries, 1)
	assert.JSONEq(t, string(upd.Body.Data), string(entries[0]))
	a.expectError(req{method: "PATCH", path: base + "/" + uuid.NewString(), token: token, body: map[string]any{"question": "q", "answer": "a"}}, 404, "NOT_FOUND")

	// Import: JSON, all or nothing with per-row errors.
	bad := a.expectError(req{method: "POST", path: base + "/import", token: token, body: []map[string]any{
		{"question": "ok", "answer": "fine"}, {"question": "", "answer": "no question"}, {"question": "no answer"}}}, 422, "VALIDATION_ERROR")
	assert.Contains(t, bad.Body.Errors, "entries[1].question")
	assert.Contains(t, bad.Body.Errors, "entries[2].answer")
	assert.NotContains(t, bad.Body.Errors, "entries[0].question")
	// CSV.
	csvBody := "question,answer,tags\nWhat are your opening hours?,We are open 9 to 5 on weekdays.,hours;support\n\"Do you ship abroad?\",\"Yes, to the EU.\",\n"
	imp := a.expect(req{method: "POST", path: base + "/import", token: token, body: csvBody, headers: map[string]string{"Content-Type": "text/csv"}}, 201)
	assert.JSONEq(t, `{"imported":2}`, string(imp.Body.Data))
	a.expectError(req{method: "POST", path: base + "/import", token: token, body: "question;answer\n", headers: map[string]string{"Content-Type": "text/csv"}}, 422, "VALIDATION_ERROR")
	a.expectError(req{method: "POST", path: base + "/import", token: token, body: "x", headers: map[string]string{"Content-Type": "text/plain"}}, 415, "UNSUPPORTED_MEDIA_TYPE")

	// 10,000 entries in one import (well over 1 MiB), and one more is refused.
	many := make([]map[string]any, 10000)
	for i := range many {
		many[i] = map[string]any{"question": fmt.Sprintf("Question number %d about our products and services?", i),
			"answer": fmt.Sprintf("Answer number %d, with enough words to look like a real answer to a real question.", i)}
	}
	big := a.expect(req{method: "POST", path: base + "/import", token: token, body: many}, 201)
	assert.JSONEq(t, `{"imported":10000}`, string(big.Body.Data))
	tooMany := a.expectError(req{method: "POST", path: base + "/import", token: token, body: append(many, map[string]any{"question": "q", "answer": "a"})}, 422, "VALIDATION_ERROR")
	assert.Contains(t, tooMany.Body.Errors, "entries")
	list = a.expect(req{method: "GET", path: base + "?per_page=1", token: token, headers: consistent(big)}, 200)
	assert.Equal(t, float64(10003), list.Body.Meta["pagination"].(map[string]any)["total"])
	list = a.expect(req{method: "GET", path: base + "?tag=hours", token: token}, 200)
	list.data(t, &entries)
	assert.Len(t, entries, 1)

	// Training builds the index in the background (202), from the knowledge as it was.
	tr := a.expect(req{method: "POST", path: "/api/v1/chatbots/" + bot.ID + "/train", token: token}, 202)
	assert.JSONEq(t, `{"status":"pending","knowledge_version":4}`, string(tr.Body.Data))
	testenv.Eventually(t, 30*time.Second, func() error {
		r := a.do(req{method: "GET", path: "/api/v1/chatbots/" + bot.ID, token: token})
		var b struct {
			Training *struct {
				Status    string  `json:"status"`
				TrainedAt *string `json:"trained_at"`
				Entries   *int    `json:"entries"`
			} `json:"training"`
		}
		r.data(t, &b)
		if b.Training == nil || b.Training.Status != "completed" || b.Training.Entries == nil || *b.Training.Entries != 10003 || b.Training.TrainedAt == nil {
			return fmt.Errorf("training: %s", r.Body.Data)
		}
		return nil
	})
	var indexed int
	require.NoError(t, a.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM knowledge_index WHERE chatbot_id = $1`, bot.ID).Scan(&indexed))
	assert.Equal(t, 10003, indexed)

	rm := a.expect(req{method: "DELETE", path: base + "/" + entry.ID, token: token}, 200)
	list = a.expect(req{method: "GET", path: base + "?search=password", token: token, headers: consistent(rm)}, 200)
	list.data(t, &entries)
	assert.Empty(t, entries)
	a.expectError(req{method: "DELETE", path: base + "/" + entry.ID, token: token}, 404, "NOT_FOUND")
	a.expectError(req{method: "GET", path: "/api/v1/chatbots/" + uuid.NewString() + "/knowledge", token: token}, 404, "NOT_FOUND")
}

type messageJSON struct {
	ID            string  `json:"id"`
	Role          string  `json:"role"`
	Content       string  `json:"content"`
	Status        *string `json:"status"`
	ReplyTo       *string `json:"reply_to"`
	FailureReason *string `json:"failure_reason"`
}

// trainedBot makes a published knowledge-base chatbot with a trained knowledge base.
func trainedBot(t *testing.T, a *app, token string) string {
	t.Helper()
	var bot struct{ ID string }
	a.expect(req{method: "POST", path: "/api/v1/chatbots", token: token, body: map[string]any{
		"name": "Helpdesk", "welcome_message": "Hello! Ask me anything.", "fallback_message": "Sorry, I can't help with that yet."}}, 201).data(t, &bot)
	a.expect(req{method: "POST", path: "/api/v1/chatbots/" + bot.ID + "/knowledge/import", token: token, body: []map[string]any{
		{"question": "How do I reset my password?", "answer": "Click 'Forgot password' on the sign-in page."},
		{"question": "What are your opening hours?", "answer": "We are open 9:00 to 17:00, Monday to Friday."},
		{"question": "Do you ship internationally?", "answer": "Yes, we ship to 40 countries."},
		{"question": "How can I cancel my subscription?", "answer": "Go to Billing, then Cancel subscription."},
	}}, 201)
	a.expect(req{method: "POST", path: "/api/v1/chatbots/" + bot.ID + "/train", token: token}, 202)
	testenv.Eventually(t, 20*time.Second, func() error {
		r := a.do(req{method: "GET", path: "/api/v1/chatbots/" + bot.ID, token: token})
		if !strings.Contains(string(r.Body.Data), `"status":"completed"`) {
			return fmt.Errorf("not trained: %s", r.Body.Data)
		}
		return nil
	})
	a.expect(req{method: "POST", path: "/api/v1/chatbots/" + bot.ID + "/publish", token: token}, 200)
	return bot.ID
}

// replies waits until every user message of a conversation is answered or failed.
func replies(t *testing.T, a *app, token, conversation string, want int) []messageJSON {
	t.Helper()
	var msgs []messageJSON
	testenv.Eventually(t, 20*time.Second, func() error {
		time.Sleep(50 * time.Millisecond) // stay well inside the API rate limit
		r := a.do(req{method: "GET", path: "/api/v1/conversations/" + conversation + "/messages?per_page=100", token: token})
		if r.Status != 200 {
			return fmt.Errorf("messages: %d", r.Status)
		}
		msgs = nil
		r.data(t, &msgs)
		if len(msgs) < want {
			return fmt.Errorf("%d of %d messages", len(msgs), want)
		}
		for _, m := range msgs {
			if m.Role == "user" && (m.Status == nil || *m.Status == "queued") {
				return fmt.Errorf("message %s still queued", m.ID)
			}
		}
		return nil
	})
	return msgs
}

func TestConversationsAnsweredFromTheKnowledgeBase(t *testing.T) {
	a := startApp(t)
	_, token := a.register("Chat Co", "Cy", "cy@example.com")
	bot := trainedBot(t, a, token)

	started := a.expect(req{method: "POST", path: "/api/v1/chatbots/" + bot + "/conversations", token: token,
		body: map[string]any{"metadata": map[string]any{"channel": "web", "visitor": 42}}}, 201)
	var conv struct {
		ID             string `json:"id"`
		WelcomeMessage string `json:"welcome_message"`
	}
	started.data(t, &conv)
	assert.Equal(t, "Hello! Ask me anything.", conv.WelcomeMessage)

	questions := []string{
		"How do I reset my password?",          // exact
		"i forgot my pasword, how to reset it", // misspelt, rephrased
		"opening hours?",                       // short
		"What is the airspeed of a swallow?",   // nothing matches
	}
	for _, q := range questions {
		r := a.expect(req{method: "POST", path: "/api/v1/conversations/" + conv.ID + "/messages", token: token, body: map[string]any{"content": q}}, 202)
		assert.Contains(t, string(r.Body.Data), `"status":"queued"`)
	}
	msgs := replies(t, a, token, conv.ID, 2*len(questions))
	require.Len(t, msgs, 2*len(questions))
	want := []string{"Click 'Forgot password' on the sign-in page.", "Click 'Forgot password' on the sign-in page.",
		"We are open 9:00 to 17:00, Monday to Friday.", "Sorry, I can't help with that yet."}
	var users []messageJSON
	replyTo := map[string]messageJSON{}
	for _, m := range msgs {
		if m.Role == "user" {
			users = append(users, m)
			continue
		}
		require.NotNil(t, m.ReplyTo)
		_, twice := replyTo[*m.ReplyTo]
		assert.False(t, twice, "two replies to one message")
		replyTo[*m.ReplyTo] = m
	}
	require.Len(t, users, len(questions))
	for i, user := range users { // oldest first: in the order posted
		assert.Equal(t, questions[i], user.Content)
		assert.Equal(t, "answered", *user.Status)
		assert.Equal(t, want[i], replyTo[user.ID].Content, questions[i])
	}
	var c struct {
		Messages int `json:"messages"`
	}
	a.expect(req{method: "GET", path: "/api/v1/conversations/" + conv.ID, token: token}, 200).data(t, &c)
	assert.Equal(t, 8, c.Messages)
	list := a.expect(req{method: "GET", path: "/api/v1/conversations?chatbot_id=" + bot, token: token}, 200)
	assert.Equal(t, float64(1), list.Body.Meta["pagination"].(map[string]any)["total"])

	// Bad input and drafts.
	a.expectError(req{method: "POST", path: "/api/v1/conversations/" + conv.ID + "/messages", token: token, body: map[string]any{"content": ""}}, 422, "VALIDATION_ERROR")
	a.expectError(req{method: "POST", path: "/api/v1/conversations/" + conv.ID + "/messages", token: token, body: map[string]any{"content": strings.Repeat("x", 4001)}}, 422, "VALIDATION_ERROR")
	a.expectError(req{method: "POST", path: "/api/v1/conversations/" + uuid.NewString() + "/messages", token: token, body: map[string]any{"content": "hi"}}, 404, "NOT_FOUND")
	var draft struct{ ID string }
	a.expect(req{method: "POST", path: "/api/v1/chatbots", token: token, body: map[string]any{"name": "Draft"}}, 201).data(t, &draft)
	a.expectError(req{method: "POST", path: "/api/v1/chatbots/" + draft.ID + "/conversations", token: token, body: map[string]any{}}, 422, "VALIDATION_ERROR")

	// Exactly one reply per message, whatever the stream delivers twice: publish every
	// message.posted again, straight to the exchange, then post one more message and
	// wait for its reply (so the duplicates, queued before it, were handled).
	conn, err := amqp091.Dial(a.mq.URL)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	rows, err := a.db.Pool.Query(context.Background(), `SELECT id, stream_type, stream_id, stream_version, position, organization_id,
		occurred_at, data FROM events WHERE type = 'message.posted'`)
	require.NoError(t, err)
	for rows.Next() {
		var e struct {
			ID, StreamType, StreamID string
			Version                  int
			Position                 int64
			Org                      string
			At                       time.Time
			Data                     json.RawMessage
		}
		require.NoError(t, rows.Scan(&e.ID, &e.StreamType, &e.StreamID, &e.Version, &e.Position, &e.Org, &e.At, &e.Data))
		body, _ := json.Marshal(map[string]any{"id": e.ID, "type": "message.posted", "schema_version": 1, "stream_type": e.StreamType,
			"stream_id": e.StreamID, "stream_version": e.Version, "position": e.Position, "organization_id": e.Org,
			"occurred_at": e.At, "actor": map[string]any{"type": "user"}, "data": e.Data})
		require.NoError(t, ch.Publish(a.mq.Exchange, "message.posted", false, false, amqp091.Publishing{ContentType: "application/json", MessageId: e.ID, Body: body}))
	}
	rows.Close()
	a.expect(req{method: "POST", path: "/api/v1/conversations/" + conv.ID + "/messages", token: token, body: map[string]any{"content": "Do you ship abroad?"}}, 202)
	msgs = replies(t, a, token, conv.ID, 2*len(questions)+2)
	assert.Len(t, msgs, 2*len(questions)+2)
	var n int
	require.NoError(t, a.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE type = 'message.replied'`).Scan(&n))
	assert.Equal(t, len(questions)+1, n)
}

func TestConversationsAnsweredByAWebhook(t *testing.T) {
	a := startApp(t, "ALLOW_PRIVATE_TARGETS=true", "WEBHOOK_TIMEOUT=500ms", "WEBHOOK_BACKOFF=10ms")
	_, token := a.register("Hook Co", "Hu", "hu@example.com")
	secret := "n8n-shared-secret-0123456789"
	var received atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var in struct {
			ChatbotID, ConversationID, MessageID, Content string
			Metadata                                      map[string]any
		}
		_ = json.Unmarshal(body, &in)
		if r.Header.Get("X-Signature") != reactors.Sign([]byte(secret), body) || in.Metadata["channel"] != "sms" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		received.Add(1)
		if in.Content == "fail please" {
			http.Error(w, "workflow error", http.StatusInternalServerError)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"reply": "n8n says: " + in.Content})
	}))
	defer srv.Close()

	var bot struct{ ID string }
	a.expect(req{method: "POST", path: "/api/v1/chatbots", token: token, body: map[string]any{"name": "Workflow bot",
		"responder": map[string]any{"type": "webhook", "url": srv.URL + "/webhook", "secret": secret}}}, 201).data(t, &bot)
	a.expect(req{method: "POST", path: "/api/v1/chatbots/" + bot.ID + "/publish", token: token}, 200)
	var conv struct{ ID string }
	a.expect(req{method: "POST", path: "/api/v1/chatbots/" + bot.ID + "/conversations", token: token,
		body: map[string]any{"metadata": map[string]any{"channel": "sms"}}}, 201).data(t, &conv)
	a.expect(req{method: "POST", path: "/api/v1/conversations/" + conv.ID + "/messages", token: token, body: map[string]any{"content": "hello"}}, 202)
	a.expect(req{method: "POST", path: "/api/v1/conversations/" + conv.ID + "/messages", token: token, body: map[string]any{"content": "fail please"}}, 202)
	msgs := replies(t, a, token, conv.ID, 3)
	var answered, failed int
	for _, m := range msgs {
		switch {
		case m.Role == "bot":
			assert.Equal(t, "n8n says: hello", m.Content)
			answered++
		case m.Content == "fail please":
			assert.Equal(t, "failed", *m.Status)
			require.NotNil(t, m.FailureReason)
			assert.Contains(t, *m.FailureReason, "status 500")
			failed++
		}
	}
	assert.Equal(t, 1, answered)
	assert.Equal(t, 1, failed)
	assert.EqualValues(t, 4, received.Load(), "one call for the answer, three attempts for the failure")
	var n int
	require.NoError(t, a.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE type = 'message.failed'`).Scan(&n))
	assert.Equal(t, 1, n)
	require.NoError(t, a.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE data::text LIKE '%' || $1 || '%'`, secret).Scan(&n))
	assert.Zero(t, n, "the secret is in no event")
	metrics := string(a.expect(req{method: "GET", path: "/metrics"}, 200).Raw)
	assert.Contains(t, metrics, `chatbotd_projector_events_applied_total{projector="webhook-responder"}`,
		"labelled by its name in the registry, like the other consumers")
	assert.NotContains(t, metrics, a.mq.QueuePrefix+`webhook-responder"`)
}

// PATCH of a knowledge entry merges (what it omits stays); PUT replaces it whole.
func TestKnowledgeEntryPatchMergesAndPutReplaces(t *testing.T) {
	a := startApp(t)
	_, token := a.register("Acme", "Ada", "ada@example.com")
	var bot struct{ ID string }
	a.expect(req{method: "POST", path: "/api/v1/chatbots", token: token, body: map[string]any{"name": "Helpdesk"}}, 201).data(t, &bot)
	var entry struct {
		ID       string   `json:"id"`
		Question string   `json:"question"`
		Answer   string   `json:"answer"`
		Tags     []string `json:"tags"`
	}
	base := "/api/v1/chatbots/" + bot.ID + "/knowledge"
	a.expect(req{method: "POST", path: base, token: token, body: map[string]any{"question": "Hours?", "answer": "9 to 5",
		"tags": []string{"hours", "office"}}}, 201).data(t, &entry)
	path := base + "/" + entry.ID
	a.expect(req{method: "PATCH", path: path, token: token, body: map[string]any{"answer": "9 to 6"}}, 200).data(t, &entry)
	assert.Equal(t, "Hours?", entry.Question, "PATCH keeps what it omits")
	assert.Equal(t, "9 to 6", entry.Answer)
	assert.Equal(t, []string{"hours", "office"}, entry.Tags, "omitting tags keeps them")
	a.expectError(req{method: "PATCH", path: path, token: token, body: map[string]any{"question": "  "}}, 422, "VALIDATION_ERROR")
	a.expect(req{method: "PATCH", path: path, token: token, body: map[string]any{"tags": []string{}}}, 200).data(t, &entry)
	assert.Empty(t, entry.Tags, "an empty list clears them")
	assert.Equal(t, "9 to 6", entry.Answer)
	a.expect(req{method: "PUT", path: path, token: token, body: map[string]any{"question": "When?", "answer": "Always",
		"tags": []string{"x"}}}, 200).data(t, &entry)
	a.expect(req{method: "PUT", path: path, token: token, body: map[string]any{"question": "When?", "answer": "Never"}}, 200).data(t, &entry)
	assert.Empty(t, entry.Tags, "PUT replaces: omitted tags are none")
	a.expectError(req{method: "PUT", path: path, token: token, body: map[string]any{"answer": "no question"}}, 422, "VALIDATION_ERROR")
	a.expectError(req{method: "PATCH", path: base + "/" + uuid.NewString(), token: token, body: map[string]any{"answer": "x"}}, 404, "NOT_FOUND")
}

// A 404 to a read without a consistency token says that a write made just now may not be
// visible yet, and names the header that waits for it; every such 404 says it (another
// tenant's id too), and a read that sent a token, or a path that is no route, does not.
func TestA404WithoutATokenNamesTheConsistencyToken(t *testing.T) {
	a := startApp(t)
	_, token := a.register("Acme", "Ada", "ada@example.com")
	_, other := a.register("Other", "Olga", "olga@example.com")
	theirs, _ := a.createUser(other, "Their user", "their@example.com", "member", nil)
	missing := a.expectError(req{method: "GET", path: "/api/v1/users/" + uuid.NewString(), token: token}, 404, "NOT_FOUND")
	assert.Contains(t, missing.Body.Message, "may not be visible yet")
	assert.Contains(t, missing.Body.Message, "X-Consistency-Token")
	foreign := a.expectError(req{method: "GET", path: "/api/v1/users/" + theirs.ID, token: token}, 404, "NOT_FOUND")
	assert.Equal(t, missing.Body.Message, foreign.Body.Message, "another tenant's id reads the same")
	_, res := a.createUser(token, "Bob", "bob@example.com", "member", nil)
	waited := a.expectError(req{method: "GET", path: "/api/v1/users/" + uuid.NewString(), token: token, headers: consistent(res)}, 404, "NOT_FOUND")
	assert.NotContains(t, waited.Body.Message, "X-Consistency-Token", "it waited: the hint does not apply")
	noRoute := a.do(req{method: "GET", path: "/api/v1/no-such-thing", token: token})
	assert.Equal(t, 404, noRoute.Status)
	assert.NotContains(t, string(noRoute.Raw), "X-Consistency-Token")
}
