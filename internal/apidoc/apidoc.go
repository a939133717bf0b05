// Package apidoc serves the hand-written OpenAPI 3 document of the HTTP API.
package apidoc

import (
	_ "embed"
	"encoding/json"
	"net/http"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/gin-gonic/gin"
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
