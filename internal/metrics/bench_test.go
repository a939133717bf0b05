package metrics_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/chatbotsaas/chatbotd/internal/metrics"
)

// BenchmarkHTTP compares a bare Gin route with the same route timed by the metrics
// middleware (go test -bench HTTP ./internal/metrics).
func BenchmarkHTTP(b *testing.B) {
	gin.SetMode(gin.ReleaseMode)
	for _, tc := range []struct {
		name string
		m    *metrics.Metrics
	}{{"bare", nil}, {"metrics", metrics.New()}} {
		r := gin.New()
		if tc.m != nil {
			r.Use(tc.m.HTTP())
		}
		r.GET("/api/v1/users/:id", func(c *gin.Context) { c.Status(http.StatusOK) })
		req := httptest.NewRequest(http.MethodGet, "/api/v1/users/0198c0de-0000-7000-8000-000000000000", nil)
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				w := httptest.NewRecorder()
				for pb.Next() {
					r.ServeHTTP(w, req)
				}
			})
		})
	}
}
