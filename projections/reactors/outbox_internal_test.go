package reactors

import (
	"context"
	"log/slog"
	"testing"
	"time"

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
