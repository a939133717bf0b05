package query

import (
	"encoding/json"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/httpx"
	"github.com/chatbotsaas/chatbotd/internal/rbac"
)

// CatalogEntry is one event type of GET /api/v1/events/catalog.
type CatalogEntry struct {
	Type          string `json:"type"`
	SchemaVersion int    `json:"schema_version"`
	StreamType    string `json:"stream_type"`
	RoutingKey    string `json:"routing_key"`
	// UpcastsFrom lists the older schema versions still in the log: they are read, and
	// published, as SchemaVersion. Consumers only ever see SchemaVersion.
	UpcastsFrom []int           `json:"upcasts_from"`
	Schema      json.RawMessage `json:"schema"`
}

// eventCatalog lists every event type with its schema version and the JSON Schema of its
// data: the contract of the event stream, for integrators.
func (h *HTTP) eventCatalog(c *gin.Context) {
	if !allowed(c, rbac.Authenticated) {
		return
	}
	specs := events.Catalog()
	out := make([]CatalogEntry, len(specs))
	for i, s := range specs {
		out[i] = CatalogEntry{Type: s.Type, SchemaVersion: s.SchemaVersion, StreamType: events.StreamTypeOf(s.Type),
			RoutingKey: s.Type, UpcastsFrom: append([]int{}, events.UpcastsFrom(s.Type)...), Schema: s.Schema}
	}
	c.Header("Cache-Control", "public, max-age=300")
	httpx.OK(c, http.StatusOK, "Event catalog", out, gin.H{"total": len(out)})
}
