package main

import (
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/apidoc"
	"github.com/chatbotsaas/chatbotd/internal/rbac"
)

var ginParam = regexp.MustCompile(`:([A-Za-z_]+)`)

// TestOpenAPIDocumentsExactlyTheRoutes fails when a route is missing from the OpenAPI
// document or the document lists a route that does not exist.
func TestOpenAPIDocumentsExactlyTheRoutes(t *testing.T) {
	doc, err := apidoc.Load()
	require.NoError(t, err)
	documented := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			documented[method+" "+path] = true
		}
	}
	served := map[string]bool{}
	for _, r := range apiRoutes(nil, nil, nil) {
		served[r.Method+" "+ginParam.ReplaceAllString(r.Path, "{$1}")] = true
	}
	assert.Equal(t, keys(served), keys(documented))
}

func TestEveryRouteDeclaresItsAccess(t *testing.T) {
	for _, r := range apiRoutes(nil, nil, nil) {
		assert.NotEmpty(t, r.Access, "%s %s", r.Method, r.Path)
		if strings.HasPrefix(r.Path, "/api/v1/users") || strings.HasPrefix(r.Path, "/api/v1/organization") {
			assert.NotEqual(t, "public", r.Access, "%s %s must not be public", r.Method, r.Path)
		}
	}
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Every operation of the document has a unique operationId (generated clients name their
// methods by it), and lists each status the server can answer it with besides its own:
// 401 where credentials are needed, 400 where a path id or a body can be malformed, 413
// and 415 where there is a body, 429 where the rate limit applies (every /api/v1 route),
// 503 where a dependency is needed (not for what is served from memory).
func TestEveryOperationListsWhatItCanAnswer(t *testing.T) {
	doc, err := apidoc.Load()
	require.NoError(t, err)
	ids := map[string]string{}
	for _, r := range apiRoutes(nil, nil, nil) {
		path := ginParam.ReplaceAllString(r.Path, "{$1}")
		op := doc.Paths.Find(path).GetOperation(r.Method)
		require.NotNil(t, op, "%s %s", r.Method, path)
		name := r.Method + " " + path
		if assert.NotEmpty(t, op.OperationID, "%s has no operationId", name) {
			assert.NotContains(t, ids, op.OperationID, "%s: operationId %q is also %s's", name, op.OperationID, ids[op.OperationID])
			ids[op.OperationID] = name
		}
		lists := func(code string) { assert.NotNil(t, op.Responses.Value(code), "%s does not list %s", name, code) }
		if r.Access != rbac.Public {
			lists("401")
		}
		api := strings.HasPrefix(path, "/api/v1/")
		if api && strings.Contains(path, "{") {
			lists("400")
		}
		if op.RequestBody != nil {
			lists("400")
			lists("413")
			lists("415")
		}
		if api && path != "/api/v1/openapi.json" {
			lists("429")
		}
		if !slices.Contains([]string{"/api/v1/openapi.json", "/docs", "/docs/assets/{file}", "/.well-known/jwks.json", "/ready",
			"/health", "/metrics"}, path) {
			lists("503")
		}
	}
}
