package metrics_test

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/metrics"
)

func TestNilMetricsCountNothingAndDoNotPanic(t *testing.T) {
	var m *metrics.Metrics
	m.Command("POST /x", "")
	m.EventsAppended("user.created", 1)
	m.Published(3, time.Millisecond)
	m.Applied("audit", 2, time.Millisecond)
	m.Retried("audit")
	m.DeadLettered("audit")
	m.CacheResult("hit")
	m.WorkerOutcome("email", "sent")
}

func scrape(t *testing.T, m *metrics.Metrics) string {
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	require.Equal(t, 200, rec.Code)
	body, _ := io.ReadAll(rec.Body)
	return string(body)
}

func TestScrapeTimeGaugesAndTheirFailures(t *testing.T) {
	m := metrics.New()
	fail := false
	m.RegisterGauges("test", time.Second, func(ctx context.Context) ([]metrics.Gauge, error) {
		if fail {
			return nil, errors.New("database down")
		}
		return []metrics.Gauge{{Name: "chatbotd_test_lag", Help: "h", Labels: map[string]string{"projection": "audit"}, Value: 7}}, nil
	})
	m.Command("POST /api/v1/users", "")
	m.Command("POST /api/v1/users", "VALIDATION_ERROR")
	out := scrape(t, m)
	assert.Contains(t, out, `chatbotd_test_lag{projection="audit"} 7`)
	assert.Contains(t, out, `chatbotd_commands_total{command="POST /api/v1/users",outcome="ok"} 1`)
	assert.Contains(t, out, `chatbotd_commands_total{command="POST /api/v1/users",outcome="VALIDATION_ERROR"} 1`)
	assert.Contains(t, out, "go_goroutines")

	fail = true
	out = scrape(t, m)
	assert.NotContains(t, out, "chatbotd_test_lag")
	assert.True(t, strings.Contains(out, `chatbotd_scrape_errors_total{source="test"} 1`), out)
}
