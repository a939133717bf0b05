// Package metrics holds the process's Prometheus collectors. One Metrics is made at
// start and passed to the parts that count; every method is safe on a nil *Metrics, so a
// part built without metrics (a test, a command-line tool) needs no special case.
package metrics

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the process's collectors, on their own registry (never the global one).
type Metrics struct {
	Registry *prometheus.Registry

	httpDuration   *prometheus.HistogramVec
	commands       *prometheus.CounterVec
	appended       *prometheus.CounterVec
	published      prometheus.Counter
	confirmed      prometheus.Histogram
	relayAge       *prometheus.HistogramVec
	appliedAge     *prometheus.HistogramVec
	applied        *prometheus.CounterVec
	retries        *prometheus.CounterVec
	deadLettered   *prometheus.CounterVec
	foreign        *prometheus.CounterVec
	redriven       *prometheus.CounterVec
	pendingMerged  *prometheus.CounterVec
	batchDuration  *prometheus.HistogramVec
	cache          *prometheus.CounterVec
	workerOutcomes *prometheus.CounterVec
}

// New registers every collector, with the Go runtime's and the process's.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{Registry: reg}
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.httpDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "chatbotd_http_request_duration_seconds", Help: "HTTP requests by route template, method and status.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"route", "method", "status"})
	m.commands = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "chatbotd_commands_total", Help: "Commands by type (method and route) and outcome (ok or the error code).",
	}, []string{"command", "outcome"})
	m.appended = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "chatbotd_events_appended_total", Help: "Events appended to the log, by type.",
	}, []string{"type"})
	m.published = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "chatbotd_relay_published_total", Help: "Events the relay published and the broker confirmed.",
	})
	m.confirmed = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "chatbotd_relay_confirm_duration_seconds",
		Help:    "Time from the relay's publish of a batch until it has the broker's confirm of all of it (a quorum queue's replication and fsync).",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	})
	// An event's age, from its append (occurred_at, the appending process's clock) to a
	// step of the pipeline: where the freshness of the read models goes, step by step.
	// Across hosts the clocks' skew is in it.
	ages := []float64{.001, .002, .005, .01, .02, .03, .05, .075, .1, .15, .2, .3, .5, 1, 2.5, 5, 10, 30, 60, 300}
	m.relayAge = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "chatbotd_relay_event_age_seconds",
		Help:    "Time from an event's append until the relay read it from the log (step read) and until the broker confirmed its publish (step confirmed).",
		Buckets: ages,
	}, []string{"step"})
	m.appliedAge = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "chatbotd_projector_event_age_seconds",
		Help:    "Time from an event's append until the commit of the projector's batch that applied it.",
		Buckets: ages,
	}, []string{"projector"})
	m.applied = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "chatbotd_projector_events_applied_total", Help: "Events a projector applied (duplicates skipped are not counted).",
	}, []string{"projector"})
	m.retries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "chatbotd_projector_retries_total", Help: "Batches a projector retried event by event after a failure, and single events tried again.",
	}, []string{"projector"})
	m.deadLettered = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "chatbotd_projector_dead_lettered_total", Help: "Events a projector or consumer sent to its dead-letter queue.",
	}, []string{"projector"})
	m.foreign = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "chatbotd_consumer_foreign_events_total",
		Help: "Events of another store (a deployment sharing the exchange) a consumer acknowledged without applying.",
	}, []string{"projector"})
	m.redriven = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "chatbotd_projector_events_redriven_total",
		Help: "Events a consumer had not applied long after the broker confirmed them, which the sweep read from the log and published to its queue again.",
	}, []string{"projector"})
	m.pendingMerged = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "chatbotd_gin_pending_pages_merged_total",
		Help: "Pages of a GIN index's pending list merged into the index beside the projectors' batches (projections.PendingLists).",
	}, []string{"index"})
	m.batchDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "chatbotd_projector_batch_duration_seconds", Help: "Time to apply and commit one batch.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"projector"})
	m.cache = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "chatbotd_cache_requests_total", Help: "Read-model cache lookups by result: hit, miss or error.",
	}, []string{"result"})
	m.workerOutcomes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "chatbotd_worker_outcomes_total", Help: "Side effects of workers (webhook deliveries, emails, bot replies) by outcome.",
	}, []string{"worker", "outcome"})
	for _, c := range []prometheus.Collector{m.httpDuration, m.commands, m.appended, m.published, m.confirmed, m.relayAge, m.appliedAge, m.applied,
		m.retries, m.deadLettered, m.foreign, m.redriven, m.pendingMerged, m.batchDuration, m.cache, m.workerOutcomes} {
		f(c)
	}
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry, Timeout: 10 * time.Second})
}

// HTTP times every request by its route template (never the raw path: ids would make a
// series per record); unmatched paths count under the route "unmatched".
func (m *Metrics) HTTP() gin.HandlerFunc {
	return func(c *gin.Context) {
		if m == nil {
			c.Next()
			return
		}
		start := time.Now()
		c.Next()
		route := c.FullPath()
		if route == "" {
			route = "unmatched"
		}
		m.httpDuration.WithLabelValues(route, c.Request.Method, strconv.Itoa(c.Writer.Status())).
			Observe(time.Since(start).Seconds())
	}
}

// Command counts one command's outcome: "ok", or the error code of its answer.
func (m *Metrics) Command(name, errorCode string) {
	if m == nil {
		return
	}
	outcome := "ok"
	if errorCode != "" {
		outcome = errorCode
	}
	m.commands.WithLabelValues(name, outcome).Inc()
}

// EventsAppended counts events of one type appended.
func (m *Metrics) EventsAppended(eventType string, n int) {
	if m != nil {
		m.appended.WithLabelValues(eventType).Add(float64(n))
	}
}

// Published counts a batch of n events the broker confirmed, took after its publish.
func (m *Metrics) Published(n int, took time.Duration) {
	if m != nil {
		m.published.Add(float64(n))
		m.confirmed.Observe(took.Seconds())
	}
}

// RelayAges observes the age at now of n events the relay read (step "read") or had
// confirmed (step "confirmed"); occurred gives the i-th event's append time.
func (m *Metrics) RelayAges(step string, now time.Time, n int, occurred func(i int) time.Time) {
	if m != nil {
		observeAges(m.relayAge.WithLabelValues(step), now, n, occurred)
	}
}

// AppliedAges observes the age at now, its batch's commit, of n events a projector
// applied; occurred gives the i-th event's append time.
func (m *Metrics) AppliedAges(projector string, now time.Time, n int, occurred func(i int) time.Time) {
	if m != nil {
		observeAges(m.appliedAge.WithLabelValues(projector), now, n, occurred)
	}
}

func observeAges(h prometheus.Observer, now time.Time, n int, occurred func(i int) time.Time) {
	for i := range n {
		h.Observe(now.Sub(occurred(i)).Seconds())
	}
}

// Applied counts events a projector applied, and the batch's duration.
func (m *Metrics) Applied(projector string, n int, took time.Duration) {
	if m != nil {
		m.applied.WithLabelValues(projector).Add(float64(n))
		m.batchDuration.WithLabelValues(projector).Observe(took.Seconds())
	}
}

// Retried counts a projector's retry.
func (m *Metrics) Retried(projector string) {
	if m != nil {
		m.retries.WithLabelValues(projector).Inc()
	}
}

// Foreign counts an event of another store a consumer skipped.
func (m *Metrics) Foreign(projector string) {
	if m != nil {
		m.foreign.WithLabelValues(projector).Inc()
	}
}

// DeadLettered counts an event a consumer gave up on.
func (m *Metrics) DeadLettered(projector string) {
	if m != nil {
		m.deadLettered.WithLabelValues(projector).Inc()
	}
}

// Redriven counts events the sweep published again to a consumer's queue.
func (m *Metrics) Redriven(projector string, n int) {
	if m != nil {
		m.redriven.WithLabelValues(projector).Add(float64(n))
	}
}

// PendingMerged counts the pages of index's pending list merged by a pass.
func (m *Metrics) PendingMerged(index string, pages int64) {
	if m != nil {
		m.pendingMerged.WithLabelValues(index).Add(float64(pages))
	}
}

// CacheResult counts a cache lookup: "hit", "miss" or "error".
func (m *Metrics) CacheResult(result string) {
	if m != nil {
		m.cache.WithLabelValues(result).Inc()
	}
}

// WorkerOutcome counts a worker's side effect by outcome.
func (m *Metrics) WorkerOutcome(worker, outcome string) {
	if m != nil {
		m.workerOutcomes.WithLabelValues(worker, outcome).Inc()
	}
}

// Gauges reads values that live elsewhere (the database, the broker) when scraped.
type Gauges func(ctx context.Context) ([]Gauge, error)

// Gauge is one sample of a scrape-time gauge.
type Gauge struct {
	Name, Help string
	Labels     map[string]string
	Value      float64
}

// RegisterGauges adds a collector that calls read on every scrape, with a timeout: a
// dependency that is down costs the scrape those series (and chatbotd_scrape_errors_total),
// never the whole /metrics answer.
func (m *Metrics) RegisterGauges(name string, timeout time.Duration, read Gauges) {
	errs := prometheus.NewCounter(prometheus.CounterOpts{Name: "chatbotd_scrape_errors_total",
		Help: "Scrape-time readings that failed.", ConstLabels: prometheus.Labels{"source": name}})
	// The error counter is sent by the collector itself, after the reading: the registry
	// collects its collectors concurrently, so as a collector of its own the counter
	// could be read before this scrape's failure was counted.
	m.Registry.MustRegister(&gaugeCollector{read: read, timeout: timeout, errs: errs})
}

type gaugeCollector struct {
	read    Gauges
	timeout time.Duration
	errs    prometheus.Counter
}

// Describe sends nothing: the collector is unchecked, its series depend on the data.
func (g *gaugeCollector) Describe(chan<- *prometheus.Desc) {}

func (g *gaugeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
	defer cancel()
	gauges, err := g.read(ctx)
	if err != nil {
		g.errs.Inc()
	}
	ch <- g.errs
	for _, s := range gauges {
		names := make([]string, 0, len(s.Labels))
		values := make([]string, 0, len(s.Labels))
		for k, v := range s.Labels {
			names = append(names, k)
			values = append(values, v)
		}
		desc := prometheus.NewDesc(s.Name, s.Help, names, nil)
		if metric, err := prometheus.NewConstMetric(desc, prometheus.GaugeValue, s.Value, values...); err == nil {
			ch <- metric
		}
	}
}
