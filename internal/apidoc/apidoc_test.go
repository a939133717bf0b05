package apidoc_test

import (
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/gin-gonic/gin"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/chatbotsaas/chatbotd/internal/apidoc"
)

func TestDocumentIsValidOpenAPI(t *testing.T) {
	_, err := apidoc.Load()
	require.NoError(t, err)
}

// The document has no key twice in one mapping. kin-openapi's loader keeps the last of
// them without a word, while the linters outside clients run (Spectral, Redocly) refuse
// the document; YAML 1.2 says such a mapping is invalid.
func TestDocumentHasNoDuplicateKeys(t *testing.T) {
	var doc any
	require.NoError(t, yaml.Unmarshal(apidoc.YAML, &doc))
	require.Error(t, yaml.Unmarshal([]byte("a:\n  x: 1\n  x: 2\n"), &doc), "the check finds a duplicate")
}

// TestEveryOperationHasSchemasAndValidExamples: every parameter and request body has a
// schema, every request body an example, every operation a successful answer with a
// schema and an example, every answer with content an example; and every example
// matches its schema.
func TestEveryOperationHasSchemasAndValidExamples(t *testing.T) {
	doc, err := apidoc.Load()
	require.NoError(t, err)
	paths := doc.Paths.InMatchingOrder()
	sort.Strings(paths)
	checked := 0
	for _, path := range paths {
		for method, op := range doc.Paths.Value(path).Operations() {
			name := method + " " + path
			for _, p := range op.Parameters {
				assert.NotNil(t, p.Value.Schema, "%s: parameter %s has no schema", name, p.Value.Name)
			}
			if op.RequestBody != nil {
				require.NotEmpty(t, op.RequestBody.Value.Content, name)
				for ctype, media := range op.RequestBody.Value.Content {
					checkMedia(t, name+" request "+ctype, media)
				}
			}
			success := false
			for code, resp := range op.Responses.Map() {
				for ctype, media := range resp.Value.Content {
					checkMedia(t, name+" "+code+" "+ctype, media)
					if strings.HasPrefix(code, "2") {
						success = true
					}
				}
			}
			assert.True(t, success, "%s has no successful answer with content", name)
			checked++
		}
	}
	assert.Greater(t, checked, 60)
}

func checkMedia(t *testing.T, name string, media *openapi3.MediaType) {
	t.Helper()
	if !assert.NotNil(t, media.Schema, "%s has no schema", name) {
		return
	}
	examples := []any{}
	if media.Example != nil {
		examples = append(examples, media.Example)
	}
	for _, ex := range media.Examples {
		examples = append(examples, ex.Value.Value)
	}
	if !assert.NotEmpty(t, examples, "%s has no example", name) {
		return
	}
	for _, ex := range examples {
		assert.NoError(t, media.Schema.Value.VisitJSON(ex), "%s: the example does not match the schema", name)
	}
}

// TestAWrongExampleIsCaught makes sure the check above can fail.
func TestAWrongExampleIsCaught(t *testing.T) {
	schema := openapi3.NewObjectSchema().WithProperty("id", openapi3.NewStringSchema()).WithRequired([]string{"id"})
	assert.Error(t, schema.VisitJSON(map[string]any{"id": 42}))
	assert.Error(t, schema.VisitJSON(map[string]any{}))
}

func TestDocsAssetsAreCompressedCachedAndBounded(t *testing.T) {
	gin.SetMode(gin.TestMode)
	page, assets := apidoc.Page()
	r := gin.New()
	r.GET("/docs", page)
	r.GET("/docs/assets/:file", assets)
	get := func(path string, headers ...string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		rec := httptest.NewRecorder()
		r.ServeHTTP(rec, req)
		return rec
	}
	res := get("/docs")
	require.Equal(t, 200, res.Code)
	assert.Contains(t, res.Body.String(), "/docs/assets/swagger-ui-bundle.js")
	assert.Contains(t, res.Header().Get("Content-Security-Policy"), "default-src 'self'")

	plain := get("/docs/assets/swagger-ui-bundle.js")
	require.Equal(t, 200, plain.Code)
	zipped := get("/docs/assets/swagger-ui-bundle.js", "Accept-Encoding", "gzip, br")
	require.Equal(t, 200, zipped.Code)
	assert.Equal(t, "gzip", zipped.Header().Get("Content-Encoding"))
	assert.Less(t, zipped.Body.Len(), plain.Body.Len()/2)
	etag := plain.Header().Get("ETag")
	require.NotEmpty(t, etag)
	assert.Equal(t, 304, get("/docs/assets/swagger-ui-bundle.js", "If-None-Match", etag).Code)
	assert.Equal(t, 404, get("/docs/assets/nope.js").Code)
	assert.Equal(t, 404, get("/docs/assets/index.html").Code)
}

// A nullable enum lists null among its values: strict validators (and OpenAPI 3.0.3's
// own clarification) reject a null that the enum does not list, whatever "nullable" says.
func TestNullableEnumsListNull(t *testing.T) {
	doc, err := apidoc.Load()
	require.NoError(t, err)
	seen := map[*openapi3.Schema]bool{}
	var walk func(path string, s *openapi3.SchemaRef)
	walk = func(path string, ref *openapi3.SchemaRef) {
		if ref == nil || ref.Value == nil || seen[ref.Value] {
			return
		}
		s := ref.Value
		seen[s] = true
		if s.Nullable && len(s.Enum) > 0 {
			assert.Contains(t, s.Enum, nil, "%s: nullable, and its enum lacks null", path)
		}
		for name, p := range s.Properties {
			walk(path+"."+name, p)
		}
		walk(path+"[]", s.Items)
		for _, group := range [][]*openapi3.SchemaRef{s.AllOf, s.AnyOf, s.OneOf} {
			for _, sub := range group {
				walk(path, sub)
			}
		}
	}
	for name, s := range doc.Components.Schemas {
		walk(name, s)
	}
}

// Every object the server answers with declares which of its fields are always there, so
// that a strict client may rely on them (inputs, whose fields are optional or declared on
// their own, are exempt). The live answers are checked against these lists by
// TestEveryRouteAnswersAsDocumented (cmd/chatbotd).
func TestResourceSchemasDeclareRequiredFields(t *testing.T) {
	doc, err := apidoc.Load()
	require.NoError(t, err)
	for name, ref := range doc.Components.Schemas {
		s := ref.Value
		if len(s.Properties) == 0 || strings.HasSuffix(name, "Input") || strings.HasSuffix(name, "Patch") {
			continue
		}
		assert.NotEmpty(t, s.Required, "%s declares no required field", name)
	}
}
