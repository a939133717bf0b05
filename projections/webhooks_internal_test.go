package projections

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// Tenants choose subscription patterns: however many distinct sets pass through, the
// compiled-matcher cache stays bounded, and a matcher still matches after a reset.
func TestTopicMatcherCacheIsBounded(t *testing.T) {
	for i := range 3 * maxMatchers {
		m := topicMatcher([]string{fmt.Sprintf("user.%d", i), "chatbot.*"})
		assert.True(t, m("chatbot.created"))
		n := matchers.Len()
		if n > maxMatchers {
			t.Fatalf("after %d distinct pattern sets the cache holds %d (bound %d)", i+1, n, maxMatchers)
		}
	}
	assert.True(t, topicMatcher([]string{"user.7"})("user.7"))
	assert.False(t, topicMatcher([]string{"user.7"})("user.8"))
}

// The subscriptions' query runs with a generic plan and the statements after it in the
// projector's transaction do not: the mode is back to the server's once it is read,
// whether the transaction pipelines its writes (as the group's does) or not.
func TestWriteDeliveriesPlansOnlyItsQueryGeneric(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pool := testenv.MustDatabase(t).Pool
	org, hook := uuid.New(), uuid.New()
	_, err := pool.Exec(ctx, `INSERT INTO webhooks (id, organization_id, url, events, status, version, created_at, updated_at)
		VALUES ($1, $2, 'https://hooks.example/in', '{chatbot.*}', 'active', 1, now(), now())`, hook, org)
	require.NoError(t, err)
	var server string
	require.NoError(t, pool.QueryRow(ctx, `SHOW plan_cache_mode`).Scan(&server))

	for _, piped := range []bool{false, true} {
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		var q pgx.Tx = tx
		if piped {
			q = &pipeTx{Tx: tx}
		}
		e := events.Envelope{ID: uuid.New(), Type: "chatbot.created", StreamType: events.StreamChatbot, StreamID: uuid.New(),
			StreamVersion: 1, Position: 1, OrganizationID: &org, OccurredAt: time.Now().UTC(), Data: []byte(`{}`)}
		require.NoError(t, writeDeliveries(ctx, q, []events.Envelope{e}))
		var mode string
		var n int
		require.NoError(t, q.QueryRow(ctx, `SELECT current_setting('plan_cache_mode'),
			(SELECT count(*) FROM webhook_deliveries WHERE event_id = $1)`, e.ID).Scan(&mode, &n))
		assert.Equal(t, server, mode, "piped %v", piped)
		assert.Equal(t, 1, n, "piped %v: the delivery", piped)
		require.NoError(t, tx.Rollback(ctx))
	}
}
