package httpx

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/stretchr/testify/assert"

	"github.com/chatbotsaas/chatbotd/internal/apperr"
)

// A request whose client left is logged at info level and counted as 499, not answered
// and logged as a 500: when a load balancer's timeout cuts many requests at once, that is
// no error of the server's. A cancellation of the server's own, with the client still
// there, stays an internal error.
func TestFailOnARequestWhoseClientLeft(t *testing.T) {
	gin.SetMode(gin.TestMode)
	for _, tc := range []struct {
		name       string
		clientLeft bool
		err        error
		status     int
		level      string
	}{
		{"client left, wrapped cancellation", true, fmt.Errorf("read user: %w", context.Canceled), StatusClientClosed, "INFO"},
		{"client left, cancellation with a code", true, apperr.Wrap(apperr.CodeUnavailable, "the database is unavailable", context.Canceled), StatusClientClosed, "INFO"},
		{"client still there", false, fmt.Errorf("read user: %w", context.Canceled), http.StatusInternalServerError, "ERROR"},
		{"client left, another error", true, fmt.Errorf("boom"), http.StatusInternalServerError, "ERROR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log bytes.Buffer
			r := gin.New()
			r.Use(RequestID(), Logger(slog.New(slog.NewJSONHandler(&log, nil))))
			r.GET("/x", func(c *gin.Context) { Fail(c, tc.err) })
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.clientLeft {
				cancel()
			}
			w := httptest.NewRecorder()
			r.ServeHTTP(w, httptest.NewRequestWithContext(ctx, http.MethodGet, "/x", nil))
			assert.Equal(t, tc.status, w.Code)
			assert.Contains(t, log.String(), fmt.Sprintf(`"level":%q`, tc.level))
			assert.Contains(t, log.String(), fmt.Sprintf(`"status":%d`, tc.status))
			if tc.status == StatusClientClosed {
				assert.Empty(t, w.Body.String(), "nobody reads it")
				assert.NotContains(t, log.String(), "INTERNAL_ERROR")
			}
		})
	}
}
