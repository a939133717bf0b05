package projections_test

import (
	"context"
	"regexp"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
	"github.com/chatbotsaas/chatbotd/projections"
)

// The projectors that write work rows (webhook deliveries, emails) send no NOTIFY in
// their transactions: a NOTIFY there takes PostgreSQL's global notification lock at
// every commit. Their workers wake on the runtime's notification after the commit.
func TestWorkRowProjectorsNotifyNothingInTheirTransactions(t *testing.T) {
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	store := eventstore.NewStore(d.Pool)
	mixedHistory(t, store)
	org, user := uuid.New(), uuid.New()
	_, err := store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamUser, StreamID: user, ExpectedVersion: 0,
		OrganizationID: &org, Meta: system, Events: []events.Event{
			events.UserCreated{Name: "Nia", Email: "nia@example.com", Roles: []string{"member"}, Status: "active"},
			events.UserPasswordChanged{}, events.UserRoleAssigned{Role: "viewer"}}})
	require.NoError(t, err)
	all := readableLog(t, d.Pool)

	pool, traced := testenv.MustTracedPool(t, d.URL)
	for _, p := range []projections.Projector{projections.Webhooks{}, projections.Notifications{}} {
		_, err := projections.ApplyBatch(ctx, pool, p, bound(p, all))
		require.NoError(t, err, p.Name())
	}
	require.NotEmpty(t, traced.Matching(regexp.MustCompile(`INSERT INTO webhook_deliveries`)), "the tracer sees the projectors' writes")
	require.NotEmpty(t, traced.Matching(regexp.MustCompile(`INSERT INTO notifications`)))
	assert.Empty(t, traced.Matching(regexp.MustCompile(`(?i)notify`)))
	assert.NotEmpty(t, traced.BatchedMatching(regexp.MustCompile(`INSERT INTO notifications`)),
		"the emails' writes are pipelined (Pipelined), not a round trip each")
}
