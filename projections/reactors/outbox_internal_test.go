package reactors

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/readmodel"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// An outbox worker wakes when the runtime says, after a commit, that its projector
// applied a batch, and not for other projectors' batches.
func TestOutboxWakesOnItsProjectorsCommit(t *testing.T) {
	d := testenv.MustDatabase(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wake := make(chan struct{}, 1)
	go outbox[struct{}, struct{}]{pool: d.Pool, projection: readmodel.NotificationsProjection, logger: slog.New(slog.DiscardHandler)}.listen(ctx, wake)
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
	// Listening has begun once a notification naming the projector wakes it.
	deadline := time.Now().Add(10 * time.Second)
	for notify(readmodel.NotificationsProjection); !woken(50 * time.Millisecond); notify(readmodel.NotificationsProjection) {
		require.True(t, time.Now().Before(deadline), "never woken")
	}
	for woken(200 * time.Millisecond) { // drain the extra wake-ups of the loop above
	}
	notify(readmodel.AccountsProjection + "," + readmodel.WebhooksProjection)
	require.False(t, woken(300*time.Millisecond), "woken by other projectors' commits")
	notify(readmodel.AccountsProjection + "," + readmodel.NotificationsProjection)
	require.True(t, woken(5*time.Second))
}

// A batch of outcomes is recorded in its order, successes a run at a time: the attempts
// and statuses of every delivery, and a subscription's consecutive failures counted as
// the calls ended (a success between two failures resets the count in between).
func TestWebhookOutcomesAreRecordedInTheirOrder(t *testing.T) {
	d := testenv.MustDatabase(t)
	ctx := context.Background()
	hook := contractWebhook(t, d.Pool)
	ids := make([]uuid.UUID, 5)
	for i := range ids {
		ids[i] = uuid.New()
		_, err := d.Pool.Exec(ctx, `INSERT INTO webhook_deliveries (id, webhook_id, organization_id, event_id, event_type,
			stream_id, stream_version, position, payload, status, next_attempt_at, attempts)
			SELECT $1, id, organization_id, $1, 'contract.happened', $1, 1, $2, '{}', 'pending', now(), 1 FROM webhooks WHERE id = $3`,
			ids[i], i+1, hook)
		require.NoError(t, err)
	}
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
