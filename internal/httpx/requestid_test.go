package httpx

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A request id the server makes is a UUIDv7, later ones sorting after earlier ones (the
// audit trail's indexes by request and correlation id grow at their end); a well-formed
// X-Request-ID is kept, and is the correlation id when none is given.
func TestRequestIDsGrowWithTime(t *testing.T) {
	gin.SetMode(gin.TestMode)
	r := gin.New()
	r.Use(RequestID())
	r.GET("/", func(c *gin.Context) { c.Status(http.StatusNoContent) })
	call := func(header string) http.Header {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		if header != "" {
			req.Header.Set("X-Request-ID", header)
		}
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		return w.Header()
	}
	var last string
	for range 50 {
		h := call("")
		id := h.Get("X-Request-ID")
		u, err := uuid.Parse(id)
		require.NoError(t, err)
		assert.Equal(t, uuid.Version(7), u.Version(), id)
		assert.Equal(t, id, h.Get("X-Correlation-ID"))
		assert.Greater(t, id, last, "a later request id sorts before an earlier one")
		last = id
	}
	h := call("client.id-1")
	assert.Equal(t, "client.id-1", h.Get("X-Request-ID"))
	assert.Equal(t, "client.id-1", h.Get("X-Correlation-ID"))
	h = call("not well formed!")
	u, err := uuid.Parse(h.Get("X-Request-ID"))
	require.NoError(t, err)
	assert.Equal(t, uuid.Version(7), u.Version())
}
