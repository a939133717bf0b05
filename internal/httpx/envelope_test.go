package httpx

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// OKDocument answers what OK answers for the same document, byte for byte (but the
// time), headers included.
func TestOKDocumentIsOKsEnvelope(t *testing.T) {
	gin.SetMode(gin.TestMode)
	doc, err := json.Marshal(map[string]any{"id": "u1", "name": `Ada <"Lovelace"> & co`, "roles": []string{"owner"}, "n": 1})
	require.NoError(t, err)
	answer := func(write func(c *gin.Context)) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		c, _ := gin.CreateTestContext(w)
		c.Request = httptest.NewRequest(http.MethodGet, "/", nil)
		c.Set(requestIDKey, "req-1.a_b")
		write(c)
		return w
	}
	time := regexp.MustCompile(`"timestamp":"[^"]*"`)
	for _, tc := range []struct {
		name string
		doc  json.RawMessage
	}{{"a document", doc}, {"no document", nil}} {
		t.Run(tc.name, func(t *testing.T) {
			want := answer(func(c *gin.Context) { OK(c, http.StatusOK, `User "x" <y>`, tc.doc, nil) })
			got := answer(func(c *gin.Context) { OKDocument(c, http.StatusOK, `User "x" <y>`, tc.doc) })
			assert.Equal(t, want.Code, got.Code)
			// Both set the length (JSON, OKDocument).
			for _, w := range []*httptest.ResponseRecorder{want, got} {
				assert.Equal(t, strconv.Itoa(w.Body.Len()), w.Header().Get("Content-Length"))
			}
			assert.Equal(t, want.Header(), got.Header())
			assert.Equal(t, time.ReplaceAllString(want.Body.String(), `"timestamp":""`), time.ReplaceAllString(got.Body.String(), `"timestamp":""`))
			assert.Regexp(t, `"timestamp":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"`, got.Body.String())
		})
	}
}

// The envelope of a cached user's document (about 400 bytes), through OK and OKDocument.
func BenchmarkEnvelope(b *testing.B) {
	gin.SetMode(gin.TestMode)
	doc, _ := json.Marshal(map[string]any{"id": "0193a5f2-7c1e-7e4a-9d2b-3f4e5a6b7c8d", "organization_id": "0193a5f2-7c1e-7e4a-9d2b-3f4e5a6b7c8e",
		"name": "Ada Lovelace", "email": "ada@example.com", "status": "active", "roles": []string{"owner"},
		"permissions": []string{"users.read", "users.write", "roles.read", "roles.write", "chatbots.read"},
		"created_at":  "2026-12-06T01:04:57.231789Z", "updated_at": "2026-12-06T01:04:57.231789Z", "version": 1})
	for _, bc := range []struct {
		name  string
		write func(c *gin.Context)
	}{
		{"OK", func(c *gin.Context) { OK(c, http.StatusOK, "User", json.RawMessage(doc), nil) }},
		{"OKDocument", func(c *gin.Context) { OKDocument(c, http.StatusOK, "User", doc) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				c, _ := gin.CreateTestContext(w)
				c.Set(requestIDKey, "0193a5f2-7c1e-7e4a-9d2b-3f4e5a6b7c8f")
				bc.write(c)
			}
		})
	}
}
