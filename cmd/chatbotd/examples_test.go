package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/apidoc"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// recorder calls routes of a running app, checks each request body and each JSON answer
// against the OpenAPI document, and keeps the first successful exchange of every route:
// the examples of the document are these, recorded from a real run.
type recorder struct {
	t        *testing.T
	a        *app
	doc      *openapi3.T
	router   routers.Router
	examples map[string]apidoc.Example
}

// registerDecoders teaches kin-openapi the server's other content types: pages and
// scripts are strings, and an NDJSON stream is valid when every line is valid against the
// schema (the document gives the schema of one line).
var registerDecoders = sync.OnceFunc(func() {
	for _, ct := range []string{"text/html", "text/javascript", "text/css"} {
		openapi3filter.RegisterBodyDecoder(ct, openapi3filter.PlainBodyDecoder)
	}
	openapi3filter.RegisterBodyDecoder("application/x-ndjson", func(body io.Reader, _ http.Header, schema *openapi3.SchemaRef,
		_ openapi3filter.EncodingFn) (any, error) {
		var first any
		sc := bufio.NewScanner(body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for n := 1; sc.Scan(); n++ {
			var line any
			if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
				return nil, fmt.Errorf("line %d: %w", n, err)
			}
			if err := schema.Value.VisitJSON(line); err != nil {
				return nil, fmt.Errorf("line %d: %w", n, err)
			}
			if first == nil {
				first = line
			}
		}
		return first, sc.Err()
	})
})

// strict checks an exchange as an outside client's validator would: kin-openapi's
// request and response validation (path and query parameters, headers, content types,
// bodies), failing on a status the operation does not list.
func (x *recorder) strict(route string, r req, res response) {
	x.t.Helper()
	registerDecoders()
	hr, err := r.request("http://chatbotd.test")
	require.NoError(x.t, err)
	found, params, err := x.router.FindRoute(hr)
	require.NoError(x.t, err, "%s: no route in the document", route)
	opts := &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, IncludeResponseStatus: true, MultiError: true}
	in := &openapi3filter.RequestValidationInput{Request: hr, PathParams: params, Route: found, Options: opts}
	assert.NoError(x.t, openapi3filter.ValidateRequest(context.Background(), in), "%s: the request does not conform", route)
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: res.Status, Header: res.Header, Options: opts}
	out.SetBodyBytes(res.Raw)
	assert.NoError(x.t, openapi3filter.ValidateResponse(context.Background(), out), "%s %d: the answer does not conform: %s", route, res.Status, res.Raw)
}

// call sends r (its path filled in) to the route whose template is route ("METHOD
// /path/{param}").
func (x *recorder) call(route string, r req, status int) response {
	x.t.Helper()
	method, template, _ := strings.Cut(route, " ")
	require.Equal(x.t, method, r.method)
	op := x.doc.Paths.Find(template)
	require.NotNil(x.t, op, "%s is not in the document", route)
	operation := op.GetOperation(method)
	require.NotNil(x.t, operation, "%s is not in the document", route)
	res := x.a.expect(r, status)
	x.strict(route, r, res)
	if r.body != nil && operation.RequestBody != nil {
		media := operation.RequestBody.Value.Content.Get("application/json")
		require.NotNil(x.t, media, "%s takes no JSON body in the document", route)
		var body any
		raw, _ := json.Marshal(r.body)
		require.NoError(x.t, json.Unmarshal(raw, &body))
		assert.NoError(x.t, media.Schema.Value.VisitJSON(body), "%s: the request body does not match the document", route)
	}
	ctype := res.Header.Get("Content-Type")
	if !strings.HasPrefix(ctype, "application/json") {
		return res
	}
	response := operation.Responses.Status(res.Status)
	require.NotNil(x.t, response, "%s answered %d, which the document does not list", route, res.Status)
	media := response.Value.Content.Get("application/json")
	require.NotNil(x.t, media, "%s %d: no JSON content in the document", route, res.Status)
	var body any
	require.NoError(x.t, json.Unmarshal(res.Raw, &body))
	assert.NoError(x.t, media.Schema.Value.VisitJSON(body), "%s %d: the answer does not match the document: %s", route, res.Status, res.Raw)
	if _, seen := x.examples[route]; !seen && res.Status < 300 && route != "GET /api/v1/openapi.json" {
		ex := apidoc.Example{Status: strconv.Itoa(res.Status), Response: shorten(body)}
		if r.body != nil {
			raw, _ := json.Marshal(r.body)
			ex.Request = json.RawMessage(raw)
		}
		x.examples[route] = ex
	}
	return res
}

// shorten keeps the first three items of every list (and of analytics' days), so that an
// example stays readable; the items kept are whole, so it still matches its schema.
func shorten(v any) any {
	switch v := v.(type) {
	case []any:
		if len(v) > 3 {
			v = v[:3]
		}
		for i := range v {
			v[i] = shorten(v[i])
		}
		return v
	case map[string]any:
		for k := range v {
			v[k] = shorten(v[k])
		}
		return v
	default:
		return v
	}
}

// TestEveryRouteAnswersAsDocumented walks every route of the API with real input, checks
// requests and answers against the OpenAPI document, and checks that the document's
// examples cover every route. UPDATE_API_EXAMPLES=1 rewrites the examples from this run.
func TestEveryRouteAnswersAsDocumented(t *testing.T) {
	a := startApp(t, "RATE_LIMIT_PUBLIC_PER_MINUTE=10000", "RATE_LIMIT_API_PER_MINUTE=10000")
	doc, err := apidoc.Load()
	require.NoError(t, err)
	// The router matches requests against the document's servers: "/" is relative, so it
	// routes a copy of the document that names the test's host.
	routed, err := apidoc.Load()
	require.NoError(t, err)
	routed.Servers = openapi3.Servers{{URL: "http://chatbotd.test"}}
	router, err := legacy.NewRouter(routed)
	require.NoError(t, err)
	x := &recorder{t: t, a: a, doc: doc, router: router, examples: map[string]apidoc.Example{}}
	type id struct{ ID string }
	data := func(r response) (v id) { r.data(t, &v); return v }

	// Accounts.
	reg := x.call("POST /api/v1/auth/register", req{method: "POST", path: "/api/v1/auth/register", body: map[string]any{
		"organization_name": "Acme Support", "name": "Ada Owner", "email": "ada@acme.example", "password": "correct horse"}}, 201)
	var registered struct{ Organization id }
	reg.data(t, &registered)
	var pair struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
	}
	x.call("POST /api/v1/auth/login", req{method: "POST", path: "/api/v1/auth/login", body: map[string]any{
		"email": "ada@acme.example", "password": "correct horse"}}, 200).data(t, &pair)
	x.call("POST /api/v1/auth/refresh", req{method: "POST", path: "/api/v1/auth/refresh", body: map[string]any{
		"refresh_token": pair.RefreshToken}}, 200).data(t, &pair)
	tok := pair.AccessToken
	get := func(route, path string, headers map[string]string) response {
		return x.call(route, req{method: "GET", path: path, token: tok, headers: headers}, 200)
	}
	send := func(route, path string, body any, status int) response {
		method, _, _ := strings.Cut(route, " ")
		return x.call(route, req{method: method, path: path, token: tok, body: body}, status)
	}
	get("GET /.well-known/jwks.json", "/.well-known/jwks.json", nil)
	get("GET /api/v1/auth/me", "/api/v1/auth/me", nil)
	created := send("POST /api/v1/users", "/api/v1/users", map[string]any{"name": "Bob Agent", "email": "bob@acme.example",
		"password": "password1", "password_confirmation": "password1", "role": "member"}, 201)
	bob := data(created).ID
	send("PATCH /api/v1/users/{id}", "/api/v1/users/"+bob, map[string]any{"name": "Bob B. Agent"}, 200)
	send("PUT /api/v1/users/{id}/roles/{role}", "/api/v1/users/"+bob+"/roles/viewer", nil, 200)
	roleRemoved := send("DELETE /api/v1/users/{id}/roles/{role}", "/api/v1/users/"+bob+"/roles/viewer", nil, 200)
	get("GET /api/v1/users", "/api/v1/users?sort=name", consistent(roleRemoved))
	get("GET /api/v1/users/check-email", "/api/v1/users/check-email?email=bob@acme.example", nil)
	get("GET /api/v1/users/{id}", "/api/v1/users/"+bob, consistent(roleRemoved))
	renamed := send("PATCH /api/v1/organization", "/api/v1/organization", map[string]any{"name": "Acme Support Ltd"}, 200)
	get("GET /api/v1/organization", "/api/v1/organization", consistent(renamed))
	send("POST /api/v1/roles", "/api/v1/roles", map[string]any{"name": "support", "permissions": []string{"users.read", "conversations.read"}}, 201)
	send("PATCH /api/v1/roles/{name}", "/api/v1/roles/support", map[string]any{"permissions": []string{"users.read", "conversations.read", "conversations.write"}}, 200)
	roles := get("GET /api/v1/roles", "/api/v1/roles", nil)
	_ = roles
	get("GET /api/v1/permissions", "/api/v1/permissions", nil)
	send("DELETE /api/v1/roles/{name}", "/api/v1/roles/support", nil, 200)
	apiToken := send("POST /api/v1/tokens", "/api/v1/tokens", map[string]any{"name": "CI export", "abilities": []string{"audit.read"},
		"expires_at": time.Now().Add(90 * 24 * time.Hour).UTC().Format(time.RFC3339)}, 201)
	get("GET /api/v1/tokens", "/api/v1/tokens", nil)
	send("DELETE /api/v1/tokens/{id}", "/api/v1/tokens/"+data(apiToken).ID, nil, 200)

	// Chatbots, knowledge, conversations.
	bot := data(send("POST /api/v1/chatbots", "/api/v1/chatbots", map[string]any{"name": "Helpdesk", "description": "Answers customers",
		"welcome_message": "Hello! Ask me anything.", "fallback_message": "Sorry, a person will get back to you."}, 201)).ID
	send("PATCH /api/v1/chatbots/{id}", "/api/v1/chatbots/"+bot, map[string]any{"description": "Answers customers, day and night"}, 200)
	entry := data(send("POST /api/v1/chatbots/{id}/knowledge", "/api/v1/chatbots/"+bot+"/knowledge",
		map[string]any{"question": "What are your opening hours?", "answer": "9:00 to 17:00, Monday to Friday."}, 201)).ID
	send("PATCH /api/v1/chatbots/{id}/knowledge/{entry_id}", "/api/v1/chatbots/"+bot+"/knowledge/"+entry,
		map[string]any{"answer": "9:00 to 18:00, Monday to Friday."}, 200)
	send("PUT /api/v1/chatbots/{id}/knowledge/{entry_id}", "/api/v1/chatbots/"+bot+"/knowledge/"+entry,
		map[string]any{"question": "When are you open?", "answer": "9:00 to 18:00, Monday to Friday.", "tags": []string{"hours"}}, 200)
	send("POST /api/v1/chatbots/{id}/knowledge/import", "/api/v1/chatbots/"+bot+"/knowledge/import", []map[string]any{
		{"question": "How do I reset my password?", "answer": "Click 'Forgot password' on the sign-in page."},
		{"question": "Do you ship internationally?", "answer": "Yes, to 40 countries."}}, 201)
	send("DELETE /api/v1/chatbots/{id}/knowledge/{entry_id}", "/api/v1/chatbots/"+bot+"/knowledge/"+entry, nil, 200)
	send("POST /api/v1/chatbots/{id}/train", "/api/v1/chatbots/"+bot+"/train", nil, 202)
	testenv.Eventually(t, 20*time.Second, func() error {
		time.Sleep(50 * time.Millisecond)
		if r := a.do(req{method: "GET", path: "/api/v1/chatbots/" + bot, token: tok}); !strings.Contains(string(r.Body.Data), `"status":"completed"`) {
			return fmt.Errorf("not trained: %s", r.Body.Data)
		}
		return nil
	})
	published := send("POST /api/v1/chatbots/{id}/publish", "/api/v1/chatbots/"+bot+"/publish", nil, 200)
	get("GET /api/v1/chatbots", "/api/v1/chatbots", consistent(published))
	get("GET /api/v1/chatbots/{id}", "/api/v1/chatbots/"+bot, consistent(published))
	get("GET /api/v1/chatbots/{id}/knowledge", "/api/v1/chatbots/"+bot+"/knowledge", consistent(published))
	conv := data(send("POST /api/v1/chatbots/{id}/conversations", "/api/v1/chatbots/"+bot+"/conversations",
		map[string]any{"metadata": map[string]any{"channel": "web", "customer": "C-1042"}}, 201)).ID
	send("POST /api/v1/conversations/{id}/messages", "/api/v1/conversations/"+conv+"/messages",
		map[string]any{"content": "How do I reset my password?"}, 202)
	replies(t, a, tok, conv, 2)
	get("GET /api/v1/conversations", "/api/v1/conversations", nil)
	get("GET /api/v1/conversations/{id}", "/api/v1/conversations/"+conv, nil)
	get("GET /api/v1/conversations/{id}/messages", "/api/v1/conversations/"+conv+"/messages", nil)
	send("POST /api/v1/chatbots/{id}/unpublish", "/api/v1/chatbots/"+bot+"/unpublish", nil, 200)

	// Webhooks (the receiver is unreachable on purpose: the deliveries record failures).
	hooked := send("POST /api/v1/webhooks", "/api/v1/webhooks", map[string]any{"url": "https://203.0.113.10/hooks/chatbots",
		"events": []string{"chatbot.*", "message.replied"}}, 201)
	hook := data(hooked).ID
	get("GET /api/v1/webhooks", "/api/v1/webhooks", consistent(hooked))
	get("GET /api/v1/webhooks/{id}", "/api/v1/webhooks/"+hook, consistent(hooked))
	get("GET /api/v1/webhooks/{id}/deliveries", "/api/v1/webhooks/"+hook+"/deliveries", consistent(hooked))
	send("DELETE /api/v1/webhooks/{id}", "/api/v1/webhooks/"+hook, nil, 200)
	send("DELETE /api/v1/chatbots/{id}", "/api/v1/chatbots/"+bot, nil, 200)

	// History.
	testenv.Eventually(t, 10*time.Second, func() error {
		time.Sleep(50 * time.Millisecond)
		if r := a.do(req{method: "GET", path: "/api/v1/audit-logs?action=chatbot.deleted", token: tok}); !strings.Contains(string(r.Raw), "chatbot.deleted") {
			return fmt.Errorf("not audited yet")
		}
		return nil
	})
	get("GET /api/v1/audit-logs", "/api/v1/audit-logs?per_page=3", nil)
	get("GET /api/v1/audit-logs/export", "/api/v1/audit-logs/export?format=ndjson", nil)
	get("GET /api/v1/audit-logs/verify", "/api/v1/audit-logs/verify", nil)
	get("GET /api/v1/events", "/api/v1/events?limit=3", nil)
	get("GET /api/v1/events/catalog", "/api/v1/events/catalog", nil)
	get("GET /api/v1/analytics/overview", "/api/v1/analytics/overview", nil)

	// Operations and the platform operators' routes.
	get("GET /health", "/health", nil)
	get("GET /ready", "/ready", nil)
	get("GET /metrics", "/metrics", nil)
	get("GET /api/v1/openapi.json", "/api/v1/openapi.json", nil)
	get("GET /docs", "/docs", nil)
	get("GET /docs/assets/{file}", "/docs/assets/init.js", nil)
	_, op := a.operator("pat@platform.example")
	tok = op
	suspended := send("POST /api/v1/admin/organizations/{id}/suspend", "/api/v1/admin/organizations/"+registered.Organization.ID+"/suspend",
		map[string]any{"reason": "Invoice 2026-031 is 60 days overdue"}, 200)
	get("GET /api/v1/admin/organizations", "/api/v1/admin/organizations?status=suspended", consistent(suspended))
	send("POST /api/v1/admin/organizations/{id}/resume", "/api/v1/admin/organizations/"+registered.Organization.ID+"/resume", nil, 200)
	get("GET /api/v1/admin/projections", "/api/v1/admin/projections", nil)
	get("GET /api/v1/admin/projections/{name}/dead-letters", "/api/v1/admin/projections/chatbots/dead-letters", nil)
	send("POST /api/v1/admin/projections/{name}/redrive", "/api/v1/admin/projections/chatbots/redrive", nil, 200)

	// Last: the password, a user's deletion, the session's end.
	tok = pair.AccessToken
	send("PUT /api/v1/auth/password", "/api/v1/auth/password", map[string]any{"current_password": "correct horse",
		"password": "battery staple", "password_confirmation": "battery staple"}, 200)
	send("DELETE /api/v1/users/{id}", "/api/v1/users/"+bob, nil, 200)
	send("POST /api/v1/auth/logout", "/api/v1/auth/logout", nil, 200)

	// Every route was called, and the document's examples cover every route.
	var routes []string
	for _, rt := range apiRoutes(nil, nil, nil) {
		routes = append(routes, rt.Method+" "+ginParam.ReplaceAllString(rt.Path, "{$1}"))
	}
	if os.Getenv("UPDATE_API_EXAMPLES") == "1" {
		raw, err := json.MarshalIndent(x.examples, "", "  ")
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join("..", "..", "internal", "apidoc", "examples.json"), append(raw, '\n'), 0o644))
		t.Log("internal/apidoc/examples.json rewritten")
	}
	recorded, err := apidoc.Examples()
	require.NoError(t, err)
	for _, route := range routes {
		method, path, _ := strings.Cut(route, " ")
		op := doc.Paths.Find(path).GetOperation(method)
		json := false
		for code, resp := range op.Responses.Map() {
			if strings.HasPrefix(code, "2") && resp.Value.Content.Get("application/json") != nil {
				json = true
			}
		}
		if !json || route == "GET /api/v1/openapi.json" {
			continue // answers that are not JSON carry their examples in the document
		}
		_, called := x.examples[route]
		assert.True(t, called, "%s was not called with success", route)
		_, documented := recorded[route]
		assert.True(t, documented, "%s has no example: run with UPDATE_API_EXAMPLES=1", route)
	}
}
