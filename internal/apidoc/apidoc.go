// Package apidoc serves the hand-written OpenAPI 3 document of the HTTP API.
package apidoc

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"path"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/gin-gonic/gin"

	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/httpx"
)

// YAML is the document as written.
//
//go:embed openapi.yaml
var YAML []byte

// Load parses and validates the document.
func Load() (*openapi3.T, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(YAML)
	if err != nil {
		return nil, err
	}
	if err := addExamples(doc); err != nil {
		return nil, err
	}
	return doc, doc.Validate(loader.Context)
}

// Handler serves the document as JSON, rendered once.
func Handler() gin.HandlerFunc {
	var once sync.Once
	var body []byte
	var err error
	return func(c *gin.Context) {
		once.Do(func() {
			var doc *openapi3.T
			if doc, err = Load(); err == nil {
				body, err = json.Marshal(doc)
			}
		})
		if err != nil {
			c.AbortWithStatus(http.StatusInternalServerError)
			return
		}
		c.Data(http.StatusOK, "application/json", body)
	}
}

//go:embed ui
var ui embed.FS

// asset is one file of the docs page, with its gzipped form made once.
type asset struct {
	body, gzipped []byte
	etag, ctype   string
}

// Page serves GET /docs and GET /docs/assets/{file}: Swagger UI (its files are embedded
// in the binary, see ui/VERSION) rendering /api/v1/openapi.json. Nothing is fetched from
// elsewhere, and the Content-Security-Policy says so to the browser.
func Page() (page, assets gin.HandlerFunc) {
	// The files are read and gzipped once, on the first request (not at start: the
	// bundle is 1.7 MB and most processes never serve the page).
	var once sync.Once
	files := map[string]*asset{}
	load := func() {
		entries, _ := ui.ReadDir("ui")
		for _, e := range entries {
			body, err := ui.ReadFile("ui/" + e.Name())
			if err != nil {
				continue
			}
			sum := sha256.Sum256(body)
			var buf bytes.Buffer
			zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
			_, _ = zw.Write(body)
			_ = zw.Close()
			ctype := mime.TypeByExtension(path.Ext(e.Name()))
			if ctype == "" {
				ctype = "text/plain; charset=utf-8"
			}
			files[e.Name()] = &asset{body: body, gzipped: buf.Bytes(), etag: `"` + hex.EncodeToString(sum[:8]) + `"`, ctype: ctype}
		}
	}
	serve := func(c *gin.Context, a *asset, cache string) {
		h := c.Writer.Header()
		h.Set("Content-Type", a.ctype)
		h.Set("ETag", a.etag)
		h.Set("Cache-Control", cache)
		h.Set("Vary", "Accept-Encoding")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "+
			"connect-src 'self'; frame-ancestors 'none'")
		if match := c.GetHeader("If-None-Match"); match != "" && match == a.etag {
			c.Status(http.StatusNotModified)
			return
		}
		body := a.body
		if strings.Contains(c.GetHeader("Accept-Encoding"), "gzip") {
			h.Set("Content-Encoding", "gzip")
			body = a.gzipped
		}
		c.Data(http.StatusOK, a.ctype, body)
	}
	page = func(c *gin.Context) {
		once.Do(load)
		serve(c, files["index.html"], "no-cache")
	}
	assets = func(c *gin.Context) {
		once.Do(load)
		a, ok := files[c.Param("file")]
		if !ok || c.Param("file") == "index.html" {
			httpx.Fail(c, apperr.NotFound("asset"))
			return
		}
		serve(c, a, "public, max-age=3600")
	}
	return page, assets
}

// Example is one route's recorded exchange: its request body (when it takes one) and its
// successful answer with the status. examples.json holds one per route, recorded from a
// real run by TestEveryRouteAnswersAsDocumented (UPDATE_API_EXAMPLES=1); Load puts them
// into the document, where tests check them against the schemas.
type Example struct {
	Request  json.RawMessage `json:"request,omitempty"`
	Status   string          `json:"status"`
	Response any             `json:"response"`
}

//go:embed examples.json
var examplesJSON []byte

// Examples are the recorded examples by route ("METHOD /path/{param}").
func Examples() (map[string]Example, error) {
	var m map[string]Example
	err := json.Unmarshal(examplesJSON, &m)
	return m, err
}

// addExamples puts the recorded examples into the document's JSON request bodies and
// answers, where the document has none of its own.
func addExamples(doc *openapi3.T) error {
	examples, err := Examples()
	if err != nil {
		return fmt.Errorf("examples.json: %w", err)
	}
	for route, ex := range examples {
		method, path, _ := strings.Cut(route, " ")
		item := doc.Paths.Value(path)
		if item == nil || item.GetOperation(method) == nil {
			return fmt.Errorf("examples.json: %s is not in the document", route)
		}
		op := item.GetOperation(method)
		if len(ex.Request) > 0 && op.RequestBody != nil && op.RequestBody.Value != nil {
			if media := op.RequestBody.Value.Content.Get("application/json"); media != nil && media.Example == nil {
				var body any
				if err := json.Unmarshal(ex.Request, &body); err != nil {
					return fmt.Errorf("examples.json: %s: %w", route, err)
				}
				media.Example = body
			}
		}
		resp := op.Responses.Value(ex.Status)
		if resp == nil || resp.Value == nil {
			return fmt.Errorf("examples.json: %s answers %s, which the document does not list", route, ex.Status)
		}
		if resp.Ref != "" {
			continue // a shared answer: its example is the component's
		}
		if media := resp.Value.Content.Get("application/json"); media != nil && media.Example == nil {
			media.Example = ex.Response
		}
	}
	return nil
}
