package projections_test

import (
	"context"
	"regexp"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
	"github.com/chatbotsaas/chatbotd/projections"
)

// statements records every SQL statement a pool runs, alone or in a batch.
type statements struct {
	mu      sync.Mutex
	sql     []string
	batched []string // those sent in a batch
}

func (s *statements) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	s.mu.Lock()
	s.sql = append(s.sql, data.SQL)
	s.mu.Unlock()
	return ctx
}

func (s *statements) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// The statements of a batch (a pipelined projector's writes) are recorded too.
func (s *statements) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}

func (s *statements) TraceBatchQuery(_ context.Context, _ *pgx.Conn, data pgx.TraceBatchQueryData) {
	s.mu.Lock()
	s.sql, s.batched = append(s.sql, data.SQL), append(s.batched, data.SQL)
	s.mu.Unlock()
}

func (s *statements) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

func (s *statements) matching(re *regexp.Regexp) []string { return s.match(re, s.sql) }

// batchedMatching are the statements matching re that were sent in a batch.
func (s *statements) batchedMatching(re *regexp.Regexp) []string { return s.match(re, s.batched) }

func (s *statements) match(re *regexp.Regexp, sql []string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, q := range sql {
		if re.MatchString(q) {
			out = append(out, q)
		}
	}
	return out
}

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

	cfg, err := pgxpool.ParseConfig(d.URL)
	require.NoError(t, err)
	traced := &statements{}
	cfg.ConnConfig.Tracer = traced
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer pool.Close()
	for _, p := range []projections.Projector{projections.Webhooks{}, projections.Notifications{}} {
		_, err := projections.ApplyBatch(ctx, pool, p, bound(p, all))
		require.NoError(t, err, p.Name())
	}
	require.NotEmpty(t, traced.matching(regexp.MustCompile(`INSERT INTO webhook_deliveries`)), "the tracer sees the projectors' writes")
	require.NotEmpty(t, traced.matching(regexp.MustCompile(`INSERT INTO notifications`)))
	assert.Empty(t, traced.matching(regexp.MustCompile(`(?i)notify`)))
	assert.NotEmpty(t, traced.batchedMatching(regexp.MustCompile(`INSERT INTO notifications`)),
		"the emails' writes are pipelined (Pipelined), not a round trip each")
}
