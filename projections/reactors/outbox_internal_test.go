package reactors

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/db"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// An outbox worker wakes when the runtime says, after a commit, that a batch wrote its
// work, and not for batches that wrote none: not for its projector's other batches, nor
// for other projectors' or workers'.
func TestOutboxWakesOnItsWork(t *testing.T) {
	d := testenv.MustDatabase(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wake := make(chan struct{}, 1)
	go outbox[struct{}, struct{}]{pool: d.Pool, work: readmodel.EmailsWork, logger: slog.New(slog.DiscardHandler)}.listen(ctx, wake)
	notify := func(payload string) {
		_, err := d.Pool.Exec(ctx, `SELECT pg_notify($1, $2)`, readmodel.AppliedChannel, payload)
		require.NoError(t, err)
	}
	woken := func(within time.Duration) bool {
		select {
		case <-wake:
			return true
		case <-time.After(within):
			return false
		}
	}
	// Listening has begun once a notification naming the work wakes it.
	deadline := time.Now().Add(10 * time.Second)
	for notify(readmodel.EmailsWork); !woken(50 * time.Millisecond); notify(readmodel.EmailsWork) {
		require.True(t, time.Now().Before(deadline), "never woken")
	}
	for woken(200 * time.Millisecond) { // drain the extra wake-ups of the loop above
	}
	notify(readmodel.AccountsProjection + "," + readmodel.NotificationsProjection + "," + readmodel.DeliveriesWork)
	require.False(t, woken(300*time.Millisecond), "woken by a batch that wrote no email")
	notify(readmodel.NotificationsProjection + "," + readmodel.EmailsWork)
	require.True(t, woken(5*time.Second))
}

// A batch of outcomes is recorded in its order, successes a run at a time: the attempts
// and statuses of every delivery, and a subscription's consecutive failures counted as
// the calls ended (a success between two failures resets the count in between).
func TestWebhookOutcomesAreRecordedInTheirOrder(t *testing.T) {
	d := testenv.MustDatabase(t)
	ctx := context.Background()
	hook := contractWebhook(t, d.Pool)
	ids := pendingDeliveries(t, d.Pool, hook, 5, 1)
	del := &WebhookDeliverer{Pool: d.Pool, Attempts: 3, RetryBase: time.Minute, RetryMax: time.Hour, DisableAfter: 100,
		Logger: testenv.Logger(t)}
	out := func(i, code int, errText string) outcome {
		return outcome{c: claimedDelivery{id: ids[i], webhook: hook, attempt: 1}, code: code, errText: errText, took: time.Millisecond}
	}
	failures := func() int {
		var n int
		require.NoError(t, d.Pool.QueryRow(ctx, `SELECT consecutive_failures FROM webhooks WHERE id = $1`, hook).Scan(&n))
		return n
	}

	require.NoError(t, del.recordAll(ctx, []outcome{out(0, 503, "status 503"), out(1, 204, ""), out(2, 200, ""), out(3, 500, "status 500")}))
	assert.Equal(t, 1, failures(), "the successes reset the count the first failure set; the last failure counts once")
	require.NoError(t, del.recordAll(ctx, []outcome{out(4, 500, "status 500")}))
	assert.Equal(t, 2, failures())
	require.NoError(t, del.recordAll(ctx, []outcome{out(4, 204, "")}))
	assert.Equal(t, 0, failures())

	for i, want := range []struct {
		status string
		code   int
	}{{"pending", 503}, {"delivered", 204}, {"delivered", 200}, {"pending", 500}, {"delivered", 204}} {
		var status string
		var code, attempts int
		require.NoError(t, d.Pool.QueryRow(ctx, `SELECT status, last_status_code, (SELECT count(*) FROM webhook_attempts
			WHERE delivery_id = $1) FROM webhook_deliveries WHERE id = $1`, ids[i]).Scan(&status, &code, &attempts))
		assert.Equal(t, want.status, status, "delivery %d", i)
		assert.Equal(t, want.code, code, "delivery %d", i)
		assert.Equal(t, 1, attempts, "delivery %d: one attempt row (the same attempt recorded twice is one)", i)
	}
}

// An outcome moves the delivery's queue row: a success or a last failure deletes it with
// the delivery's status; a failure with attempts left keeps it, unleased and due later,
// and the delivery shows that time. A record that comes after the delivery was
// cancelled changes neither.
func TestWebhookOutcomesMoveTheQueue(t *testing.T) {
	d := testenv.MustDatabase(t)
	ctx := context.Background()
	hook := contractWebhook(t, d.Pool)
	ids := pendingDeliveries(t, d.Pool, hook, 4, 0)
	_, err := d.Pool.Exec(ctx, `UPDATE webhook_queue SET leased_until = now() + interval '1 minute'`)
	require.NoError(t, err)
	// The last one's subscription went away meanwhile: cancelled, as the projector does it.
	_, err = d.Pool.Exec(ctx, `WITH dequeued AS (DELETE FROM webhook_queue WHERE delivery_id = $1 RETURNING delivery_id)
		UPDATE webhook_deliveries SET status = 'cancelled', finished_at = now() WHERE id IN (SELECT delivery_id FROM dequeued)`, ids[3])
	require.NoError(t, err)

	del := &WebhookDeliverer{Pool: d.Pool, Attempts: 3, RetryBase: time.Minute, RetryMax: time.Hour, DisableAfter: 100,
		Logger: testenv.Logger(t)}
	out := func(i, attempt, code int, errText string) outcome {
		return outcome{c: claimedDelivery{id: ids[i], webhook: hook, attempt: attempt}, code: code, errText: errText, took: time.Millisecond}
	}
	require.NoError(t, del.recordAll(ctx, []outcome{out(0, 1, 204, ""), out(1, 1, 503, "status 503"), out(2, 3, 500, "status 500"),
		out(3, 1, 204, "")}))

	for i, want := range []struct {
		status   string
		attempts int
		queued   bool
	}{{"delivered", 1, false}, {"pending", 1, true}, {"failed", 3, false}, {"cancelled", 0, false}} {
		var status string
		var attempts int
		var queued, unleased, later, shown bool
		require.NoError(t, d.Pool.QueryRow(ctx, `SELECT d.status, d.attempts, q.delivery_id IS NOT NULL,
				coalesce(q.leased_until IS NULL, false), coalesce(q.next_attempt_at > now() + interval '30 seconds', false),
				coalesce(q.next_attempt_at = d.next_attempt_at, false)
			FROM webhook_deliveries d LEFT JOIN webhook_queue q ON q.delivery_id = d.id WHERE d.id = $1`, ids[i]).
			Scan(&status, &attempts, &queued, &unleased, &later, &shown))
		assert.Equal(t, want.status, status, "delivery %d", i)
		assert.Equal(t, want.attempts, attempts, "delivery %d", i)
		assert.Equal(t, want.queued, queued, "delivery %d", i)
		if want.queued {
			assert.True(t, unleased && later && shown, "delivery %d: requeued unleased, for a retry later, shown on the delivery", i)
		}
	}
}

// A claim leases deliveries without touching an indexed column: next_attempt_at stays,
// leased_until moves, and PostgreSQL writes each claim as a heap-only update (no new
// index entries) of the delivery's queue row. A leased row is not claimed again until
// its lease runs out. An outcome deletes the queue row and writes the delivery as a
// heap-only update too.
func TestWebhookClaimsAndOutcomesAreHeapOnlyUpdates(t *testing.T) {
	d := testenv.MustDatabase(t)
	ctx := context.Background()
	hook := contractWebhook(t, d.Pool)
	const n = 40
	_, err := d.Pool.Exec(ctx, `INSERT INTO webhook_deliveries (id, webhook_id, organization_id, event_id, event_type,
		stream_id, stream_version, position, payload, status, next_attempt_at)
		SELECT gen_random_uuid(), id, organization_id, gen_random_uuid(), 'contract.happened', gen_random_uuid(), 1, i,
			convert_to(repeat('x', 600), 'UTF8'), 'pending', now() - interval '1 minute'
		FROM webhooks, generate_series(1, $2) AS i WHERE id = $1`, hook, n)
	require.NoError(t, err)
	enqueuePending(t, d.Pool)
	// One connection, so that the claim's statistics are flushed by the statement after it.
	pool, err := db.Open(ctx, d.URL, 1)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	// heapOnly runs do and checks that it updated n rows of table, each a heap-only update.
	heapOnly := func(table, what string, do func()) {
		t.Helper()
		hotUpdates := func() int64 {
			var hot int64
			_, err := pool.Exec(ctx, `SELECT pg_stat_force_next_flush()`)
			require.NoError(t, err)
			require.NoError(t, pool.QueryRow(ctx, `SELECT n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = $1`, table).Scan(&hot))
			return hot
		}
		before := hotUpdates()
		do()
		testenv.Eventually(t, 10*time.Second, func() error {
			if hot := hotUpdates() - before; hot != n {
				return fmt.Errorf("%d of %d %s were heap-only updates", hot, n, what)
			}
			return nil
		})
	}

	del := &WebhookDeliverer{Pool: pool, Box: contractBox(t), Timeout: 5 * time.Second, DisableAfter: 100, Logger: testenv.Logger(t)}
	var claimed []claimedDelivery
	heapOnly("webhook_queue", "claims", func() {
		claimed, err = del.claim(ctx, n)
		require.NoError(t, err)
		require.Len(t, claimed, n)
	})
	var moved, leased int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE next_attempt_at > now()),
		count(*) FILTER (WHERE leased_until > now() AND attempts = 1) FROM webhook_queue`).Scan(&moved, &leased))
	assert.Zero(t, moved, "a claim leaves next_attempt_at as it was")
	assert.Equal(t, n, leased)

	again, err := del.claim(ctx, n)
	require.NoError(t, err)
	assert.Empty(t, again, "leased rows are not claimed again")
	_, err = pool.Exec(ctx, `UPDATE webhook_queue SET leased_until = now() WHERE delivery_id = $1`, claimed[0].id)
	require.NoError(t, err)
	again, err = del.claim(ctx, n)
	require.NoError(t, err)
	require.Len(t, again, 1, "a lease that ran out is claimed again")
	assert.Equal(t, claimed[0].id, again[0].id)
	assert.Equal(t, 2, again[0].attempt)

	// The outcomes: each delivery's row is written once more, in place.
	claimed[0] = again[0]
	outcomes := make([]outcome, len(claimed))
	for i, c := range claimed {
		outcomes[i] = outcome{c: c, code: 204, took: time.Millisecond}
	}
	heapOnly("webhook_deliveries", "outcomes", func() { require.NoError(t, del.recordAll(ctx, outcomes)) })
	var queued, delivered, attempts int
	require.NoError(t, pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM webhook_queue), count(*) FILTER (WHERE status = 'delivered'),
		sum(attempts) FROM webhook_deliveries`).Scan(&queued, &delivered, &attempts))
	assert.Zero(t, queued, "a delivered delivery leaves the queue")
	assert.Equal(t, n, delivered)
	assert.Equal(t, n+1, attempts, "each delivery's attempts, the one claimed twice with 2")
}

// An outbox keeps enough claimed rows waiting to cover two claims against a fast
// receiver, and few enough against a slow one that none waits past half its lease.
func TestOutboxPaceSizesClaimsByCallsAndLeases(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name        string
		call, claim time.Duration
		want        int
	}{
		{"not measured yet: one row a worker", 0, 0, 16},
		{"fast calls: two claims' worth", ms, 3 * ms, 96},
		{"very fast calls: at most eight rows a worker", ms / 10, 5 * ms, 128},
		{"calls slower than claims: one row a worker", 50 * ms, ms, 16},
		{"slow receiver: the last row's wait within half the hold", 10 * time.Second, 2 * ms, 12},
		{"receiver timing out: fewer", 30 * time.Second, 2 * ms, 4},
		{"calls longer than the hold: one row", 5 * time.Minute, 2 * ms, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := pace{workers: 16, hold: 30 * time.Second, call: tc.call, claim: tc.claim}
			got := p.depth()
			assert.Equal(t, tc.want, got)
			if tc.call > 0 && got > 1 {
				assert.LessOrEqual(t, time.Duration(2*got)*tc.call/16, p.hold/2, "the last of a claim starts its call in time")
			}
		})
	}
	assert.Equal(t, 10*ms, movingAverage(0, 10*ms))
	assert.Equal(t, 12*ms, movingAverage(10*ms, 20*ms))
}

// Pruning deletes the finished deliveries older than the retention, with their attempts,
// and keeps the rest: pending ones, recent ones, and the attempts of both.
func TestWebhookPruneDeletesOldDeliveriesWithTheirAttempts(t *testing.T) {
	d := testenv.MustDatabase(t)
	ctx := context.Background()
	hook := contractWebhook(t, d.Pool)
	add := func(status string, finishedAgo time.Duration) uuid.UUID {
		id := uuid.New()
		var finished *time.Time
		if status != "pending" {
			at := time.Now().Add(-finishedAgo)
			finished = &at
		}
		// Created a minute before it finished, if it did.
		_, err := d.Pool.Exec(ctx, `INSERT INTO webhook_deliveries (id, webhook_id, organization_id, event_id, event_type,
			stream_id, stream_version, position, payload, status, next_attempt_at, attempts, finished_at, created_at)
			SELECT $1, id, organization_id, $1, 'contract.happened', $1, 1, 1, '{}', $3, now(), 1, $4,
				coalesce($4::timestamptz - interval '1 minute', now()) FROM webhooks WHERE id = $2`,
			id, hook, status, finished)
		require.NoError(t, err)
		enqueuePending(t, d.Pool)
		_, err = d.Pool.Exec(ctx, `INSERT INTO webhook_attempts (delivery_id, attempt, status_code, duration_ms, attempted_at)
			VALUES ($1, 1, 204, 1, now())`, id)
		require.NoError(t, err)
		return id
	}
	old := []uuid.UUID{add("delivered", 48*time.Hour), add("failed", 30*time.Hour)}
	kept := []uuid.UUID{add("delivered", time.Hour), add("pending", 0)}

	del := &WebhookDeliverer{Pool: d.Pool, Retention: 24 * time.Hour, Logger: testenv.Logger(t)}
	require.NoError(t, del.prune(ctx))
	count := func(ids []uuid.UUID) (deliveries, attempts int) {
		require.NoError(t, d.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM webhook_deliveries WHERE id = ANY($1)),
			(SELECT count(*) FROM webhook_attempts WHERE delivery_id = ANY($1))`, ids).Scan(&deliveries, &attempts))
		return deliveries, attempts
	}
	deliveries, attempts := count(old)
	assert.Zero(t, deliveries, "old finished deliveries pruned")
	assert.Zero(t, attempts, "with their attempts")
	deliveries, attempts = count(kept)
	assert.Equal(t, 2, deliveries, "recent and pending deliveries kept")
	assert.Equal(t, 2, attempts)
}

// A claim in flight when the worker stops is not cut short: the database would run it
// anyway, and could lease rows after the worker has returned (they would then wait for
// their lease to run out). The worker returns once the claim has.
func TestOutboxWaitsForAClaimInFlightAtShutdown(t *testing.T) {
	d := testenv.MustDatabase(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started, release := make(chan struct{}), make(chan struct{})
	var claimCtxErr atomic.Value
	o := outbox[int, int]{name: "test", pool: d.Pool, work: "work:test", nextDue: `SELECT NULL::timestamptz`, workers: 1,
		hold: time.Minute, logger: slog.New(slog.DiscardHandler),
		claim: func(cctx context.Context, _ int) ([]int, error) {
			close(started)
			<-release
			claimCtxErr.Store(fmt.Sprint(cctx.Err()))
			return nil, nil
		},
		call:   func(context.Context, int) int { return 0 },
		record: func(context.Context, []int) error { return nil }}
	done := make(chan struct{})
	go func() { o.run(ctx); close(done) }()
	<-started
	cancel()
	select {
	case <-done:
		t.Fatal("the worker returned while its claim was in flight")
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the worker did not return once its claim had")
	}
	assert.Equal(t, "<nil>", claimCtxErr.Load(), "the claim's context outlived the worker's")
}
