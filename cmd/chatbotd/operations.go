package main

import (
	"context"
	"crypto/subtle"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/apidoc"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/db"
	"github.com/chatbotsaas/chatbotd/internal/httpx"
	"github.com/chatbotsaas/chatbotd/internal/metrics"
	"github.com/chatbotsaas/chatbotd/internal/rbac"
	"github.com/chatbotsaas/chatbotd/projections"
)

// operations are the routes for operators and integrators: probes, metrics, the API
// document and its page, and the platform operators' view of the projections.
type operations struct {
	d     *deps
	ready *atomic.Bool
}

func (o *operations) routes() []httpx.Route {
	page, assets := apidoc.Page()
	return []httpx.Route{
		httpx.R(http.MethodGet, "/health", rbac.Public, o.health),
		httpx.R(http.MethodGet, "/ready", rbac.Public, o.readyz),
		httpx.R(http.MethodGet, "/metrics", rbac.Public, o.metrics),
		httpx.R(http.MethodGet, "/api/v1/openapi.json", rbac.Public, apidoc.Handler()),
		httpx.R(http.MethodGet, "/docs", rbac.Public, page),
		httpx.R(http.MethodGet, "/docs/assets/:file", rbac.Public, assets),
		httpx.R(http.MethodGet, "/api/v1/admin/projections", rbac.PlatformOperate, o.projections),
		httpx.R(http.MethodGet, "/api/v1/admin/projections/:name/dead-letters", rbac.PlatformOperate, o.deadLetters),
		httpx.R(http.MethodPost, "/api/v1/admin/projections/:name/redrive", rbac.PlatformOperate, o.redrive),
	}
}

// unlimited are the operations' routes that are never rate limited (probes and scrapes).
func unlimited(path string) bool {
	return path == "/health" || path == "/ready" || path == "/metrics"
}

func (o *operations) health(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
	defer cancel()
	status := func(ok bool) string {
		if ok {
			return "up"
		}
		return "down"
	}
	var wg sync.WaitGroup
	var dbOK, redisOK bool
	wg.Add(2)
	go func() { defer wg.Done(); dbOK = o.d.pool.Ping(ctx) == nil }()
	go func() { defer wg.Done(); redisOK = o.d.rdb.Ping(ctx).Err() == nil }()
	wg.Wait()
	brokerOK := o.d.broker.Connected()
	services := gin.H{"database": status(dbOK), "redis": status(redisOK), "broker": status(brokerOK)}
	if dbOK && redisOK && brokerOK {
		httpx.OK(c, http.StatusOK, "Healthy", gin.H{"status": "healthy", "services": services, "store_id": o.d.storeID}, nil)
		return
	}
	httpx.JSON(c, http.StatusServiceUnavailable, httpx.Envelope{Success: false, Message: "A dependency is down",
		ErrorCode: apperr.CodeUnavailable, Data: gin.H{"status": "unhealthy", "services": services, "store_id": o.d.storeID},
		Timestamp: httpx.Timestamp(), RequestID: httpx.RequestIDOf(c)})
}

func (o *operations) readyz(c *gin.Context) {
	if !o.ready.Load() {
		httpx.Fail(c, apperr.New(apperr.CodeUnavailable, "Not ready"))
		return
	}
	pending, err := db.Pending(c.Request.Context(), o.d.pool)
	if err != nil || pending {
		httpx.Fail(c, apperr.New(apperr.CodeUnavailable, "Migrations are not applied"))
		return
	}
	httpx.OK(c, http.StatusOK, "Ready", gin.H{"status": "ready"}, nil)
}

// metrics serves the Prometheus registry, behind METRICS_TOKEN when it is set.
func (o *operations) metrics(c *gin.Context) {
	if want := o.d.cfg.MetricsToken; want != "" {
		got := c.GetHeader("Authorization")
		if subtle.ConstantTimeCompare([]byte(got), []byte("Bearer "+want)) != 1 {
			httpx.Fail(c, apperr.New(apperr.CodeUnauthenticated, "GET /metrics needs the bearer token METRICS_TOKEN"))
			return
		}
	}
	o.d.metrics.Handler().ServeHTTP(c.Writer, c.Request)
}

// Projections is GET /admin/projections: the relay's and every projection's progress.
type Projections struct {
	Relay       eventstore.RelayStatus `json:"relay"`
	Projections []projections.Status   `json:"projections"`
}

// status reads the relay's and the projections' progress; the broker gets 2 s to answer.
func (d *deps) status(ctx context.Context) (Projections, error) {
	tracked, err := d.tracked()
	if err != nil {
		return Projections{}, err
	}
	relay, err := eventstore.RelayLag(ctx, d.pool, "")
	if err != nil {
		return Projections{}, err
	}
	bctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	list, err := projections.Statuses(bctx, d.pool, d.broker, tracked)
	return Projections{Relay: relay, Projections: list}, err
}

func (o *operations) projections(c *gin.Context) {
	st, err := o.d.status(c.Request.Context())
	if err != nil {
		httpx.Fail(c, err)
		return
	}
	httpx.OK(c, http.StatusOK, "Projections", st, nil)
}

// trackedByName finds a consumer by the name in the path.
func (o *operations) trackedByName(c *gin.Context) (projections.Tracked, bool) {
	tracked, err := o.d.tracked()
	if err != nil {
		httpx.Fail(c, err)
		return projections.Tracked{}, false
	}
	for _, t := range tracked {
		if t.Name == c.Param("name") {
			return t, true
		}
	}
	httpx.Fail(c, apperr.NotFound("projection"))
	return projections.Tracked{}, false
}

// limitParam reads ?limit= (1..1000, default def).
func limitParam(c *gin.Context, def int) (int, bool) {
	limit := def
	if v := c.Query("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			httpx.Fail(c, apperr.Invalid("limit", "must be an integer from 1 to 1000"))
			return 0, false
		}
		limit = n
	}
	return limit, true
}

// deadLetters is GET /admin/projections/{name}/dead-letters: the events the projection
// gave up on, left in place.
func (o *operations) deadLetters(c *gin.Context) {
	t, ok := o.trackedByName(c)
	if !ok {
		return
	}
	limit, ok := limitParam(c, 100)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), 5*time.Second)
	defer cancel()
	list, err := projections.ListDeadLetters(ctx, o.d.broker, t.Queue, limit)
	if err != nil {
		httpx.Fail(c, brokerError(err))
		return
	}
	httpx.OK(c, http.StatusOK, "Dead letters", list, nil)
}

// redrive is POST /admin/projections/{name}/redrive: the dead letters go back to the
// projection's queue (after a fix), up to ?limit= of them.
func (o *operations) redrive(c *gin.Context) {
	t, ok := o.trackedByName(c)
	if !ok {
		return
	}
	limit, ok := limitParam(c, 1000)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), 20*time.Second)
	defer cancel()
	moved, err := projections.Redrive(ctx, o.d.pool, o.d.broker, t, limit)
	if err != nil && moved == 0 {
		httpx.Fail(c, brokerError(err))
		return
	}
	if err != nil {
		o.d.logger.Warn("redrive stopped early", "projection", t.Name, "moved", moved, "error", err)
	}
	o.d.logger.Info("dead letters redriven", "projection", t.Name, "moved", moved, "request_id", httpx.RequestIDOf(c))
	httpx.OK(c, http.StatusOK, "Dead letters redriven", gin.H{"projection": t.Name, "redriven": moved}, nil)
}

// brokerError answers a broker failure with 503: the broker is down or not ready. The
// broker's own text (queue names, AMQP codes) goes to the log line only.
func brokerError(err error) error {
	return apperr.Wrap(apperr.CodeUnavailable, "The message broker did not answer", err)
}

// gauges are the scrape-time figures of /metrics that live in the database and the
// broker: the relay's lag and each projection's.
func (d *deps) gauges(ctx context.Context) ([]metrics.Gauge, error) {
	st, err := d.status(ctx)
	out := []metrics.Gauge{
		{Name: "chatbotd_relay_lag_events", Help: "Committed events the relay has not published yet.", Value: float64(st.Relay.Behind)},
		{Name: "chatbotd_relay_lag_seconds", Help: "Age of the oldest event the relay has not published yet.", Value: st.Relay.LagSeconds},
		{Name: "chatbotd_relay_position", Help: "Log position the relay has published up to.", Value: float64(st.Relay.Position)},
	}
	for _, p := range st.Projections {
		l := map[string]string{"projection": p.Name}
		add := func(name, help string, v float64) {
			out = append(out, metrics.Gauge{Name: name, Help: help, Labels: l, Value: v})
		}
		if p.Position != nil {
			add("chatbotd_projection_position", "Highest log position the projection applied.", float64(*p.Position))
			add("chatbotd_projection_events_applied", "Events the projection applied, all processes together.", float64(p.EventsApplied))
		}
		if p.Queued != nil {
			add("chatbotd_projection_lag_events", "Messages waiting in the projection's queue (its queue depth; the projectors' group's are frames of up to 64 events).", float64(*p.Queued))
			add("chatbotd_projection_dead_lettered", "Events in the projection's dead-letter queue.", float64(*p.DeadLettered))
			add("chatbotd_projection_consumers", "Consumers of the projection's queue.", float64(*p.Consumers))
		}
		if p.LagSeconds != nil {
			add("chatbotd_projection_lag_seconds", "Age of the oldest event the projection has not applied yet.", *p.LagSeconds)
		}
		if p.SweptAt != nil {
			add("chatbotd_projection_events_redriven", "Events the sweep found not applied an interval after the broker confirmed them, and published again.", float64(p.EventsRedriven))
			add("chatbotd_projection_swept_seconds", "Seconds since the sweep last finished checking the consumer against the log.", time.Since(*p.SweptAt).Seconds())
		}
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}
