package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/netguard"
	"github.com/chatbotsaas/chatbotd/internal/secretbox"
	"github.com/chatbotsaas/chatbotd/projections"
	"github.com/chatbotsaas/chatbotd/projections/reactors"
)

// integrationFigures measures the analytics projector (live batches and a rebuild)
// against COPY, and webhook deliveries against a bare HTTP client posting the same
// bodies to the same local receiver.
func integrationFigures(ctx context.Context, o options, report *strings.Builder) error {
	pool, _, err := freshDatabase(ctx, o, "_integrations")
	if err != nil {
		return err
	}
	defer pool.Close()

	// Analytics: 1,000 conversations of 1 start and 99 messages.
	org := uuid.New()
	const conversations, perConv = 1000, 99
	if err := seedHistory(ctx, pool, org, conversations, perConv); err != nil {
		return err
	}
	total := conversations * (1 + perConv)
	var all []events.Envelope
	cp := eventstore.Checkpoint{}
	for {
		batch, next, err := eventstore.ReadHistory(ctx, pool, eventstore.HistoryFilter{}, cp, 10000)
		if err != nil {
			return err
		}
		if len(batch) == 0 {
			break
		}
		all, cp = append(all, batch...), next
	}
	if len(all) != total {
		return fmt.Errorf("analytics: read %d of %d events", len(all), total)
	}
	batchSize := projectorBatch()
	start := time.Now()
	for i := 0; i < len(all); i += batchSize {
		if _, err := projections.ApplyBatch(ctx, pool, projections.Analytics{}, all[i:min(i+batchSize, len(all))]); err != nil {
			return err
		}
	}
	live := float64(total) / time.Since(start).Seconds()
	fmt.Fprintf(os.Stderr, "analytics: live batches %.0f events/s\n", live)
	rb := &projections.Rebuild{Pool: pool, Projector: projections.Analytics{}, BatchSize: 5000}
	start = time.Now()
	if err := rb.Run(ctx); err != nil {
		return err
	}
	rebuilt := float64(total) / time.Since(start).Seconds()
	fmt.Fprintf(os.Stderr, "analytics: rebuild %.0f events/s\n", rebuilt)
	baseline, err := copyRate(ctx, pool, total)
	if err != nil {
		return err
	}

	report.WriteString("\n### Analytics projector\n\n")
	fmt.Fprintf(report, "%d events (%d conversations of 1 `conversation.started` and %d `message.posted`) applied by the analytics "+
		"projector: live, in the runtime's transactions of %d events (stream versions, dedupe, counters), and by "+
		"`projections rebuild analytics`. The baseline is COPY of as many audit rows (see above), in the same run.\n\n",
		total, conversations, perConv, batchSize)
	report.WriteString("| work | events/s | ratio to COPY |\n|---|---:|---:|\n")
	fmt.Fprintf(report, "| COPY of audit rows (baseline) | %.0f | 1.00× |\n", baseline)
	fmt.Fprintf(report, "| analytics, live batches of %d | %.0f | %.2f× |\n", batchSize, live, live/baseline)
	fmt.Fprintf(report, "| `projections rebuild analytics` | %.0f | %.2f× |\n", rebuilt, rebuilt/baseline)

	return webhookFigures(ctx, pool, org, all, report)
}

// webhookOnlyFigures makes the webhook figures alone, with bodies taken from a smaller
// history than the analytics figures need.
func webhookOnlyFigures(ctx context.Context, o options, report *strings.Builder) error {
	pool, _, err := freshDatabase(ctx, o, "_integrations")
	if err != nil {
		return err
	}
	defer pool.Close()
	org := uuid.New()
	if err := seedHistory(ctx, pool, org, 20, 99); err != nil {
		return err
	}
	all, _, err := eventstore.ReadHistory(ctx, pool, eventstore.HistoryFilter{}, eventstore.Checkpoint{}, 10000)
	if err != nil {
		return err
	}
	return webhookFigures(ctx, pool, org, all, report)
}

// webhookFigures delivers n events to a local receiver through the deliverer, and posts
// the same bodies with a bare client as the baseline, in rounds that alternate the two
// (a single pair moved by a tenth from one run to the next).
func webhookFigures(ctx context.Context, pool *pgxpool.Pool, org uuid.UUID, all []events.Envelope, report *strings.Builder) error {
	const n, workers, rounds = 20000, 16, 3
	// Both senders run under the collector settings chatbotd serve gives the process its
	// deliverer runs in (cmd/chatbotd: GOGC 400 and a soft limit of 150 MiB, unless the
	// environment sets them), not this process's defaults: at GOGC 100, on this process's
	// small heap, the deliverer's allocations ran the collector far more often than
	// serve's settings let it run.
	if os.Getenv("GOGC") == "" {
		defer debug.SetGCPercent(debug.SetGCPercent(400))
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		defer debug.SetMemoryLimit(debug.SetMemoryLimit(150 << 20))
	}
	var received atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	receiver := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		received.Add(1)
		w.WriteHeader(http.StatusNoContent)
	})}
	go func() { _ = receiver.Serve(ln) }()
	defer receiver.Close()
	target := "http://" + ln.Addr().String() + "/hook"
	client := reactors.WebhookClient(netguard.Guard{AllowPrivate: true}, 10*time.Second)
	bodies := make([][]byte, n)
	for i := range bodies {
		if bodies[i], err = json.Marshal(all[i%len(all)]); err != nil {
			return err
		}
	}
	secret := []byte("bench-webhook-secret-0123456789")

	// Ids as serve makes them (UUIDv7: the webhooks projector's delivery ids, the events'
	// and the aggregates'), so that the indexes on them grow at their ends as they do
	// there, not at random pages. The bare client sends them in its headers too.
	newID := func() uuid.UUID { return uuid.Must(uuid.NewV7()) }
	hook := newID()
	deliveryIDs, eventIDs := make([]uuid.UUID, n), make([]uuid.UUID, n)
	for i := range n {
		deliveryIDs[i], eventIDs[i] = newID(), newID()
	}

	// The baseline: the same requests (the same bodies, signed, with the same headers),
	// POSTed by 16 goroutines, nothing recorded.
	postBare := func() (float64, map[string]float64, error) {
		var next atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		shares, err := cpuShares(func() error {
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := next.Add(1) - 1; i < n; i = next.Add(1) - 1 {
						req, _ := http.NewRequestWithContext(ctx, http.MethodPost, target, strings.NewReader(string(bodies[i])))
						req.Header = reactors.DeliveryHeaders(secret, bodies[i], time.Now(), hook, deliveryIDs[i], eventIDs[i],
							"message.posted", 1)
						if res, err := client.Do(req); err == nil {
							_, _ = io.Copy(io.Discard, res.Body)
							_ = res.Body.Close()
						}
					}
				}()
			}
			wg.Wait()
			return nil
		})
		return float64(n) / time.Since(start).Seconds(), shares, err
	}

	// The deliverer: one subscription, n pending deliveries over n/10 streams of 10,
	// written anew for each round.
	box, err := secretbox.New([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, `INSERT INTO webhooks (id, organization_id, url, events, status, version, created_at, updated_at)
		VALUES ($1, $2, $3, '{#}', 'active', 1, now(), now())`, hook, org, target); err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, `INSERT INTO webhook_secrets (webhook_id, sealed) VALUES ($1, $2)`, hook, box.Seal(secret, hook[:])); err != nil {
		return err
	}
	rows := make([][]any, n)
	streams := make([]uuid.UUID, n/10)
	for i := range streams {
		streams[i] = newID()
	}
	for i := range rows {
		rows[i] = []any{deliveryIDs[i], hook, org, eventIDs[i], "message.posted", streams[i%len(streams)], i/len(streams) + 1,
			int64(i + 1), bodies[i], "pending", time.Now()}
	}
	pending := func() error {
		// The checkpoint comes before the deliveries are written, as it does in serve, where
		// the webhooks projector writes a delivery's row moments before it is claimed and
		// one checkpoint rarely falls between the two: so the claims' and records' updates
		// of the rows need no full-page images in the WAL, there as here. A checkpoint
		// after the copy put one into the WAL for every page the deliverer first touched.
		if _, err := pool.Exec(ctx, `TRUNCATE webhook_deliveries, webhook_queue, webhook_attempts; CHECKPOINT`); err != nil {
			return err
		}
		if _, err := pool.CopyFrom(ctx, pgx.Identifier{"webhook_deliveries"}, []string{"id", "webhook_id", "organization_id", "event_id",
			"event_type", "stream_id", "stream_version", "position", "payload", "status", "next_attempt_at"}, pgx.CopyFromRows(rows)); err != nil {
			return err
		}
		if _, err := pool.Exec(ctx, `INSERT INTO webhook_queue (delivery_id, webhook_id, stream_id, stream_version, position, next_attempt_at)
			SELECT id, webhook_id, stream_id, stream_version, position, next_attempt_at FROM webhook_deliveries WHERE status = 'pending'`); err != nil {
			return err
		}
		_, err := pool.Exec(ctx, `ANALYZE webhook_deliveries, webhook_queue`)
		return err
	}
	deliverer := &reactors.WebhookDeliverer{Pool: pool, Store: eventstore.NewStore(pool), Box: box, Client: client, Timeout: 10 * time.Second,
		Workers: workers, Attempts: 12, RetryBase: 30 * time.Second, RetryMax: 6 * time.Hour, DisableAfter: 20,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	deliver := func() (float64, map[string]float64, error) {
		received.Store(0)
		start := time.Now()
		shares, err := cpuShares(func() error { return deliverer.Deliver(ctx) })
		if err != nil {
			return 0, nil, err
		}
		took := time.Since(start)
		var delivered int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'`).Scan(&delivered); err != nil {
			return 0, nil, err
		}
		if delivered != n {
			return 0, nil, fmt.Errorf("webhooks: %d of %d delivered (%d received)", delivered, n, received.Load())
		}
		return float64(n) / took.Seconds(), shares, nil
	}

	report.WriteString("\n### Webhook deliveries\n\n")
	fmt.Fprintf(report, "%d pending deliveries of one subscription (%d streams of 10 events, so the per-stream order is in play) "+
		"POSTed to a receiver in the same process that answers 204, by the deliverer with %d calls in flight: claim (lease), "+
		"sign, POST, record the attempt and the outcome (the outcomes that finished meanwhile in one transaction). The baseline is a bare Go client "+
		"POSTing the same requests (the same bodies, signed, with the same ten headers: the signatures, the subscription's, "+
		"delivery's and event's ids, the attempt and the event's type) to the same receiver with the same concurrency and recording "+
		"nothing. %d rounds, each the bare "+
		"client then the deliverer (its deliveries written anew). Both run under the collector settings `chatbotd serve` gives its "+
		"deliverer (GOGC 400, a soft limit of 150 MiB). The CPU is each process's over the phase, from `/proc`, per delivery (this "+
		"process holds the sender and the receiver).\n\n", n, n/10, workers, rounds)
	report.WriteString("| round | bare client/s | deliverer/s | ratio to bare client | CPU a post, bare client | CPU a delivery, deliverer |\n" +
		"|---:|---:|---:|---:|---|---|\n")
	ratios := make([]float64, 0, rounds)
	for r := 1; r <= rounds; r++ {
		bare, bareShares, err := postBare()
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "webhooks round %d: bare client %.0f posts/s (%s)\n", r, bare, perItem(bareShares, bare))
		if err := pending(); err != nil {
			return err
		}
		rate, shares, err := deliver()
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "webhooks round %d: deliverer %.0f deliveries/s (%s)\n", r, rate, perItem(shares, rate))
		ratios = append(ratios, rate/bare)
		fmt.Fprintf(report, "| %d | %.0f | %.0f | %.2f× | %s | %s |\n", r, bare, rate, rate/bare, perItem(bareShares, bare), perItem(shares, rate))
	}
	slices.Sort(ratios)
	fmt.Fprintf(report, "\nThe deliverer's ratio, the median of the rounds: **%.2f×**.\n", ratios[len(ratios)/2])
	return nil
}
