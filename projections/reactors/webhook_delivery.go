package reactors

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/db"
	"github.com/chatbotsaas/chatbotd/internal/metrics"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
	"github.com/chatbotsaas/chatbotd/internal/retry"
	"github.com/chatbotsaas/chatbotd/internal/secretbox"
)

// WebhookDeliverer POSTs the deliveries the Webhooks projector writes. It keeps no
// transaction open during a call: a delivery is claimed (leased) in one short
// transaction, sent, and its attempt recorded in another. Several deliverers, in one
// process or many, share the work (SKIP LOCKED).
//
//   - A failed attempt is retried after an exponential delay (RetryBase doubling up to
//     RetryMax, with jitter) up to Attempts times: about 14 hours with the defaults. A
//     waiting retry is just a row with a later next_attempt_at: it holds up nothing but
//     the deliveries behind it in its own stream.
//   - Order: a delivery is not sent while an earlier event of the same stream is still
//     pending for the same subscription. Streams, and subscriptions, do not wait on each
//     other.
//   - After DisableAfter consecutive failed attempts (across deliveries) the subscription
//     is disabled by a webhook.disabled event, appended in the transaction of the attempt
//     that crossed the line, so exactly once.
//   - Delivery is at least once: a deliverer that dies between the call and its record
//     leaves the lease to expire and the call is made again. Receivers dedupe by the
//     envelope's id (also in X-Event-ID).
type WebhookDeliverer struct {
	Pool         *pgxpool.Pool
	Store        *eventstore.Store
	Box          *secretbox.Box
	Client       *http.Client
	Timeout      time.Duration // the client's; a claim's lease is longer
	Workers      int           // concurrent calls
	Attempts     int           // per delivery
	RetryBase    time.Duration
	RetryMax     time.Duration
	DisableAfter int
	Retention    time.Duration // finished deliveries older than this are deleted
	Logger       *slog.Logger
	Metrics      *metrics.Metrics
}

const (
	// webhookLeaseMargin is how much longer than a call's timeout a claim's lease runs.
	webhookLeaseMargin = 30 * time.Second
	webhookUserAgent   = "chatbotd-webhooks/1"
	maxErrorText       = 500
)

type claimedDelivery struct {
	id, webhook, org, event uuid.UUID
	eventType               string
	payload                 []byte
	attempt                 int
	position                int64          // in the log: calls start in this order
	target                  *webhookTarget // nil: the subscription was deleted meanwhile
}

type webhookTarget struct {
	url    string
	secret []byte
}

// Run delivers until ctx ends, on the outbox runtime: up to Workers calls are in flight
// at any time, and outcomes are recorded in batches, one transaction for all that
// finished meanwhile.
func (d *WebhookDeliverer) Run(ctx context.Context) error {
	outbox[claimedDelivery, outcome]{name: "webhook deliveries", pool: d.Pool, work: readmodel.DeliveriesWork,
		nextDue: `SELECT least(
			(SELECT min(next_attempt_at) FROM webhook_queue WHERE next_attempt_at > now()),
			(SELECT min(leased_until) FROM webhook_queue WHERE next_attempt_at <= now() AND leased_until > now()))`,
		workers: d.Workers, hold: webhookLeaseMargin, claim: d.claim, call: d.call, record: d.recordAll, every: d.prune, logger: d.Logger}.run(ctx)
	return nil
}

type outcome struct {
	c       claimedDelivery
	code    int
	errText string
	took    time.Duration
	skip    bool // not called: no target (deleted meanwhile)
}

func (d *WebhookDeliverer) call(ctx context.Context, c claimedDelivery) outcome {
	if c.target == nil {
		return outcome{c: c, skip: true}
	}
	code, errText, took := d.send(ctx, *c.target, c)
	return outcome{c: c, code: code, errText: errText, took: took}
}

// Deliver runs the deliverer until nothing pending is due or in flight (benchmarks,
// tools); retries scheduled further off than a lease are left.
func (d *WebhookDeliverer) Deliver(ctx context.Context) error {
	lease := d.Timeout + webhookLeaseMargin
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	for {
		var due bool
		if err := d.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM webhook_queue
			WHERE greatest(next_attempt_at, leased_until) <= now() + $1::interval)`, lease).Scan(&due); err != nil {
			return err
		}
		if !due {
			cancel()
			return <-done
		}
		retry.Sleep(ctx.Done(), 20*time.Millisecond)
	}
}

// claim leases up to n due deliveries of active subscriptions, none of which has an
// earlier event of its stream still pending for its subscription, and reads them.
//
// Claims read and lease rows of webhook_queue (one small row per pending delivery), not
// the deliveries. The lease is leased_until, which no index names, and next_attempt_at
// stays as it was: the claim is then a heap-only update on a page with room (the
// table's fillfactor), with no new entry in any index. Leased rows keep their place at
// the front of the due index and are passed over.
//
// The ORDER BY ... LIMIT is read off the due index, which has both sort keys. The
// subscription is checked by a subquery per row, not a join: a join's estimate (with a
// small webhooks table that autovacuum never analyzes, one row) made PostgreSQL expect a
// few dozen due rows in all, and sort the whole backlog for every claim. The rows locked
// are updated where they are (by ctid: a TID scan, no index lookup), and their
// deliveries read by key (a lateral subquery that OFFSET 0 keeps from becoming a join):
// joins were planned as scans of the whole queue, or of every delivery kept. A row that
// another transaction changed after this statement's snapshot is not at the ctid the
// snapshot sees, so it is not updated, not returned, and is claimed by a later claim.
// The claims are sorted by their log position here, not by the statement: PostgreSQL
// sorted the rows with their payloads.
//
// The plan is generic (db.QueryGeneric): the parameters do not change its shape, and a
// custom plan took a tenth of the claim's time to make at every claim (BENCHMARKS.md).
func (d *WebhookDeliverer) claim(ctx context.Context, n int) ([]claimedDelivery, error) {
	lease := d.Timeout + webhookLeaseMargin
	claimed, err := db.QueryGeneric(ctx, d.Pool, func(r pgx.CollectableRow) (claimedDelivery, error) {
		var c claimedDelivery
		err := r.Scan(&c.id, &c.webhook, &c.org, &c.event, &c.eventType, &c.payload, &c.attempt, &c.position)
		return c, err
	}, `WITH due AS (
			SELECT q.ctid FROM webhook_queue q
			WHERE q.next_attempt_at <= now() AND (q.leased_until IS NULL OR q.leased_until <= now())
			  AND (SELECT w.status = 'active' AND w.consecutive_failures < $3 FROM webhooks w WHERE w.id = q.webhook_id)
			  AND NOT EXISTS (SELECT 1 FROM webhook_queue p
				WHERE p.webhook_id = q.webhook_id AND p.stream_id = q.stream_id AND p.stream_version < q.stream_version)
			ORDER BY q.next_attempt_at, q.position
			LIMIT $1
			FOR UPDATE OF q SKIP LOCKED),
		leased AS (
			UPDATE webhook_queue q SET attempts = q.attempts + 1, leased_until = now() + $2::interval
			WHERE q.ctid = ANY (ARRAY(SELECT ctid FROM due))
			RETURNING q.delivery_id, q.attempts, q.position)
		SELECT d.id, d.webhook_id, d.organization_id, d.event_id, d.event_type, d.payload, l.attempts, l.position
		FROM leased l, LATERAL (SELECT * FROM webhook_deliveries d WHERE d.id = l.delivery_id OFFSET 0) d`,
		n, lease, d.DisableAfter)
	if err != nil || len(claimed) == 0 {
		return nil, err
	}
	slices.SortFunc(claimed, func(a, b claimedDelivery) int { return cmp.Compare(a.position, b.position) })
	targets, err := d.targets(ctx, claimed)
	if err != nil {
		return nil, err // the leases expire and the deliveries come back
	}
	for i := range claimed {
		if t, ok := targets[claimed[i].webhook]; ok {
			claimed[i].target = &t
		}
	}
	return claimed, nil
}

func (d *WebhookDeliverer) targets(ctx context.Context, claimed []claimedDelivery) (map[uuid.UUID]webhookTarget, error) {
	ids := make([]uuid.UUID, 0, len(claimed))
	for _, c := range claimed {
		ids = append(ids, c.webhook)
	}
	rows, err := d.Pool.Query(ctx, `SELECT w.id, w.url, s.sealed FROM webhooks w JOIN webhook_secrets s ON s.webhook_id = w.id
		WHERE w.id = ANY($1)`, ids)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[uuid.UUID]webhookTarget{}
	for rows.Next() {
		var id uuid.UUID
		var url string
		var sealed []byte
		if err := rows.Scan(&id, &url, &sealed); err != nil {
			return nil, err
		}
		secret, err := d.Box.Open(sealed, id[:])
		if err != nil {
			d.Logger.Error("webhook deliveries: the secret cannot be opened", "webhook_id", id, "error", err)
			continue
		}
		out[id] = webhookTarget{url: url, secret: secret}
	}
	return out, rows.Err()
}

// WebhookHeaders are the headers of a delivery: X-Signature is "sha256=" and the hex
// HMAC-SHA256 of the body (the API contract); X-Webhook-Signature, "t=<X-Webhook-Timestamp>,v1=" and
// the hex HMAC-SHA256 of "<timestamp>.<body>", lets a receiver refuse a replayed request
// by its age.
func WebhookHeaders(secret, body []byte, at time.Time) http.Header {
	return webhookHeaders(secret, body, at, 0)
}

// DeliveryHeaders are the headers of a subscription's delivery: WebhookHeaders, and the
// subscription's, the delivery's and the event's ids, the attempt's number and the
// event's type.
func DeliveryHeaders(secret, body []byte, at time.Time, webhook, delivery, event uuid.UUID, eventType string, attempt int) http.Header {
	h := webhookHeaders(secret, body, at, 5)
	h["X-Webhook-Id"] = []string{webhook.String()}
	h["X-Delivery-Id"] = []string{delivery.String()}
	h["X-Delivery-Attempt"] = []string{strconv.Itoa(attempt)}
	h["X-Event-Id"] = []string{event.String()}
	h["X-Event-Type"] = []string{eventType}
	return h
}

// webhookHeaders is WebhookHeaders with room for extra more. The keys are written in
// their canonical form into a map sized once, and one HMAC is reset between the two
// signatures: built with Set, a delivery's headers were among the deliverer's largest
// allocations (BENCHMARKS.md).
func webhookHeaders(secret, body []byte, at time.Time, extra int) http.Header {
	ts := strconv.FormatInt(at.Unix(), 10)
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	sum := m.Sum(make([]byte, 0, sha256.Size))
	signature := "sha256=" + hex.EncodeToString(sum)
	m.Reset()
	m.Write([]byte(ts + "."))
	m.Write(body)
	sum = m.Sum(sum[:0])
	h := make(http.Header, 5+extra)
	h["Content-Type"] = []string{"application/json"}
	h["User-Agent"] = []string{webhookUserAgent}
	h["X-Signature"] = []string{signature}
	h["X-Webhook-Timestamp"] = []string{ts}
	h["X-Webhook-Signature"] = []string{"t=" + ts + ",v1=" + hex.EncodeToString(sum)}
	return h
}

func (d *WebhookDeliverer) send(ctx context.Context, t webhookTarget, c claimedDelivery) (code int, errText string, took time.Duration) {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(c.payload))
	if err != nil {
		return 0, "bad URL", time.Since(start)
	}
	req.Header = DeliveryHeaders(t.secret, c.payload, start, c.webhook, c.id, c.event, c.eventType, c.attempt)
	defer func() { d.observe(ctx, c, code, errText) }()
	res, err := d.Client.Do(req)
	if err != nil {
		return 0, truncate(err.Error(), maxErrorText), time.Since(start)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, maxReply))
	_ = res.Body.Close()
	took = time.Since(start)
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return res.StatusCode, fmt.Sprintf("status %d", res.StatusCode), took
	}
	return res.StatusCode, "", took
}

// observe counts an attempt's outcome and traces it at debug level with the event's
// correlation id (read from the delivered envelope).
func (d *WebhookDeliverer) observe(ctx context.Context, c claimedDelivery, code int, errText string) {
	outcome := "delivered"
	if errText != "" {
		outcome = "failed"
	}
	d.Metrics.WorkerOutcome("webhook_delivery", outcome)
	if !d.Logger.Enabled(ctx, slog.LevelDebug) {
		return
	}
	var corr struct {
		CorrelationID string `json:"correlation_id"`
	}
	_ = json.Unmarshal(c.payload, &corr)
	d.Logger.LogAttrs(ctx, slog.LevelDebug, "webhook delivery attempted", slog.String("delivery_id", c.id.String()),
		slog.String("event_id", c.event.String()), slog.String("type", c.eventType), slog.Int("status", code),
		slog.String("outcome", outcome), slog.String("correlation_id", corr.CorrelationID))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// retryDelay is the wait after a delivery's attempt-th failed attempt: RetryBase doubled
// per attempt, at most RetryMax, ±20% so that many failures do not come back together.
func (d *WebhookDeliverer) retryDelay(attempt int) time.Duration {
	delay := d.RetryMax
	if attempt < 40 {
		delay = min(d.RetryBase<<(attempt-1), d.RetryMax)
	}
	return time.Duration(float64(delay) * (0.8 + 0.4*rand.Float64()))
}

// recordAll stores attempts and what follows from them, in one transaction.
// recordAll records a batch of outcomes in one transaction, in their order. Successes,
// nearly all of them under load, are recorded a run at a time by one statement (the
// attempts, the deliveries and the subscriptions' failure counts together): one round
// trip for the run instead of three per delivery. A failure is recorded on its own, as
// it may disable its subscription, so runs end at failures and the counts see the same
// order either way.
func (d *WebhookDeliverer) recordAll(ctx context.Context, batch []outcome) error {
	tx, err := d.Pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	var run []outcome
	for _, o := range batch {
		switch {
		case o.skip:
		case o.errText == "":
			run = append(run, o)
		default:
			if err := d.recordDelivered(ctx, tx, run); err != nil {
				return err
			}
			run = run[:0]
			if err := d.record(ctx, tx, o.c, o.code, o.errText, o.took); err != nil {
				return err
			}
		}
	}
	if err := d.recordDelivered(ctx, tx, run); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// recordDelivered records successful attempts in one statement: what record does for
// each, set-wise.
func (d *WebhookDeliverer) recordDelivered(ctx context.Context, tx pgx.Tx, run []outcome) error {
	if len(run) == 0 {
		return nil
	}
	ids := make([]uuid.UUID, len(run))
	attempts := make([]int32, len(run))
	codes := make([]*int32, len(run))
	took := make([]int64, len(run))
	hooks := make([]uuid.UUID, 0, 1)
	for i, o := range run {
		ids[i], attempts[i], took[i] = o.c.id, int32(o.c.attempt), o.took.Milliseconds()
		if o.code != 0 {
			code := int32(o.code)
			codes[i] = &code
		}
		if !slices.Contains(hooks, o.c.webhook) {
			hooks = append(hooks, o.c.webhook)
		}
	}
	_, err := tx.Exec(ctx, `WITH done AS (
			SELECT * FROM unnest($1::uuid[], $2::int[], $3::int[], $4::bigint[]) AS t(id, attempt, code, took)),
		attempts AS (
			INSERT INTO webhook_attempts (delivery_id, attempt, status_code, error, duration_ms, attempted_at)
			SELECT id, attempt, code, NULL, took, now() FROM done ON CONFLICT DO NOTHING),
		dequeued AS (DELETE FROM webhook_queue WHERE delivery_id = ANY($1)),
		delivered AS (
			UPDATE webhook_deliveries d SET status = 'delivered', attempts = done.attempt, last_status_code = done.code,
				last_error = NULL, finished_at = now()
			FROM done WHERE d.id = done.id AND d.status = 'pending')
		UPDATE webhooks SET consecutive_failures = 0 WHERE id = ANY($5) AND consecutive_failures <> 0`,
		ids, attempts, codes, took, hooks)
	return err
}

// record stores one attempt and what follows from it.
func (d *WebhookDeliverer) record(ctx context.Context, tx pgx.Tx, c claimedDelivery, code int, errText string, took time.Duration) error {
	var status *int
	if code != 0 {
		status = &code
	}
	var errp *string
	if errText != "" {
		errp = &errText
	}
	if _, err := tx.Exec(ctx, `INSERT INTO webhook_attempts (delivery_id, attempt, status_code, error, duration_ms, attempted_at)
		VALUES ($1, $2, $3, $4, $5, now()) ON CONFLICT DO NOTHING`, c.id, c.attempt, status, errp, took.Milliseconds()); err != nil {
		return err
	}
	if errText == "" {
		if _, err := tx.Exec(ctx, `WITH dequeued AS (DELETE FROM webhook_queue WHERE delivery_id = $1)
			UPDATE webhook_deliveries SET status = 'delivered', attempts = $3, last_status_code = $2, last_error = NULL,
			finished_at = now() WHERE id = $1 AND status = 'pending'`, c.id, status, c.attempt); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE webhooks SET consecutive_failures = 0 WHERE id = $1 AND consecutive_failures <> 0`, c.webhook); err != nil {
			return err
		}
		return nil
	}
	var err error
	if c.attempt >= d.Attempts {
		_, err = tx.Exec(ctx, `WITH dequeued AS (DELETE FROM webhook_queue WHERE delivery_id = $1)
			UPDATE webhook_deliveries SET status = 'failed', attempts = $4, last_status_code = $2, last_error = $3,
			finished_at = now() WHERE id = $1 AND status = 'pending'`, c.id, status, errText, c.attempt)
	} else {
		_, err = tx.Exec(ctx, `WITH requeued AS (
				UPDATE webhook_queue SET next_attempt_at = now() + $4::interval, leased_until = NULL WHERE delivery_id = $1
				RETURNING delivery_id, next_attempt_at)
			UPDATE webhook_deliveries d SET attempts = $5, last_status_code = $2, last_error = $3, next_attempt_at = r.next_attempt_at
			FROM requeued r WHERE d.id = r.delivery_id AND d.status = 'pending'`,
			c.id, status, errText, d.retryDelay(c.attempt), c.attempt)
	}
	if err != nil {
		return err
	}
	var failures int
	var active bool
	if err := tx.QueryRow(ctx, `UPDATE webhooks SET consecutive_failures = consecutive_failures + 1 WHERE id = $1
		RETURNING consecutive_failures, status = 'active'`, c.webhook).Scan(&failures, &active); err != nil {
		return err
	}
	if failures == d.DisableAfter && active {
		if err := d.disable(ctx, tx, c, failures, errText); err != nil {
			return err
		}
	}
	return nil
}

// disable appends webhook.disabled. Only the attempt that brought the count to
// DisableAfter gets here (the row update serializes them).
func (d *WebhookDeliverer) disable(ctx context.Context, tx pgx.Tx, c claimedDelivery, failures int, lastError string) error {
	var version int
	if err := tx.QueryRow(ctx, `SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = $1`, c.webhook).Scan(&version); err != nil {
		return err
	}
	// A savepoint: a racing deletion wins, and the attempt is recorded all the same.
	sp, err := tx.Begin(ctx)
	if err != nil {
		return err
	}
	_, err = d.Store.AppendTx(ctx, sp, eventstore.AppendRequest{StreamType: events.StreamWebhook, StreamID: c.webhook,
		ExpectedVersion: version, OrganizationID: &c.org,
		Events: []events.Event{events.WebhookDisabled{Reason: fmt.Sprintf("%d consecutive failed deliveries", failures),
			ConsecutiveFailures: failures, LastError: lastError}},
		Meta: events.Meta{Actor: events.Actor{Type: events.ActorSystem}, CausationID: c.event.String()}})
	if err != nil {
		d.Logger.Warn("webhook deliveries: could not disable", "webhook_id", c.webhook, "error", err)
		return sp.Rollback(ctx)
	}
	d.Logger.Warn("webhook disabled", "webhook_id", c.webhook, "consecutive_failures", failures, "last_error", lastError)
	return sp.Commit(ctx)
}

// prune deletes finished deliveries older than Retention, and their attempts (which
// have no foreign key to them: its check cost every record a lock of the delivery). It
// finds them by created_at, which is indexed and never changes (finished_at is not
// indexed: setting it would make every outcome rewrite an index); a delivery finishes
// after it was created, so every one it should delete is in that range.
func (d *WebhookDeliverer) prune(ctx context.Context) error {
	if d.Retention <= 0 {
		return nil
	}
	for {
		var n int
		if err := d.Pool.QueryRow(ctx, `WITH gone AS (
				DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM webhook_deliveries
					WHERE created_at < now() - $1::interval AND finished_at < now() - $1::interval LIMIT 5000)
				RETURNING id),
			attempts AS (DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM gone))
			SELECT count(*) FROM gone`, d.Retention).Scan(&n); err != nil {
			return err
		}
		if n < 5000 {
			return nil
		}
	}
}
