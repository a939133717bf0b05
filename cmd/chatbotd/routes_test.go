package main

import (
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/apidoc"
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
