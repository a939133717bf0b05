package query

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/readmodel"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// A read of one record by its id finds it by the primary key, in a large tenant whose
// tables were never analyzed (the tables of a new deployment, or of one whose autovacuum
// is behind): not by reading the tenant's entries in its (organization_id, ...) index.
// The plain "id = $1 AND organization_id = $2 AND ..." took the tenant's index here for
// chatbots and webhooks, in the plan made for the values and in the generic plan of a
// statement prepared on the empty tables (checked); conversations are read the same way,
// so that their plan does not hang on statistics either.
func TestReadsByIDTakeThePrimaryKey(t *testing.T) {
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	conn, err := d.Pool.Acquire(ctx) // one connection: its prepared statements and their plans
	require.NoError(t, err)
	defer conn.Release()
	cases := []struct {
		name, table, sql string
	}{
		{"chatbot", "chatbots", byID("chatbots", readmodel.ChatbotColumns, "deleted_at IS NULL")},
		{"chatbot exists", "chatbots", `SELECT EXISTS (` + byID("chatbots", "1", "deleted_at IS NULL") + `)`},
		{"chatbot of analytics", "chatbots", byID("chatbots", "1", "true")},
		{"conversation", "conversations", byID("conversations", conversationColumns, "true")},
		{"webhook", "webhooks", byID("webhooks", webhookColumns, "status <> 'deleted'")},
	}
	// Prepared and planned while the tables are empty, as a process that starts on a new
	// deployment plans them: a generic plan made then is kept as the tables grow (such a
	// plan read 65,000 chatbots for one in the fifth pass of issue 23).
	_, err = conn.Exec(ctx, `SET plan_cache_mode = force_generic_plan`)
	require.NoError(t, err)
	defer func() { _, _ = conn.Exec(ctx, `RESET plan_cache_mode`) }()
	for i, c := range cases {
		_, err := conn.Exec(ctx, fmt.Sprintf(`PREPARE by_id_%d(uuid, uuid) AS %s`, i, c.sql))
		require.NoError(t, err)
		_, err = conn.Exec(ctx, fmt.Sprintf(`EXECUTE by_id_%d('%s', '%s')`, i, uuid.New(), uuid.New()))
		require.NoError(t, err)
	}
	org := uuid.New()
	const n = 3000
	_, err = conn.Exec(ctx, `INSERT INTO chatbots (id, organization_id, name, description, welcome_message,
			fallback_message, status, responder, version, created_at, updated_at)
		SELECT gen_random_uuid(), $1, 'Bot ' || i, '', '', '', 'draft', '{"type":"knowledge_base"}', 1, now(), now()
		FROM generate_series(1, $2) AS i`, org, n)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `INSERT INTO conversations (id, organization_id, chatbot_id, metadata, messages, created_at)
		SELECT gen_random_uuid(), $1, gen_random_uuid(), '{}', 0, now() FROM generate_series(1, $2)`, org, n)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `INSERT INTO webhooks (id, organization_id, url, events, status, version, created_at, updated_at)
		SELECT gen_random_uuid(), $1, 'https://example.com/hook', '{#}', 'active', 1, now(), now()
		FROM generate_series(1, $2)`, org, n)
	require.NoError(t, err)

	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var id uuid.UUID
			require.NoError(t, conn.QueryRow(ctx, `SELECT id FROM `+c.table+` ORDER BY id OFFSET 1234 LIMIT 1`).Scan(&id))
			for _, plan := range []string{
				testenv.Explain(t, conn, "ANALYZE, BUFFERS", c.sql, id, org),
				testenv.Explain(t, conn, "ANALYZE, BUFFERS", fmt.Sprintf(`EXECUTE by_id_%d('%s', '%s')`, i, id, org)),
			} {
				assert.Contains(t, plan, c.table+"_pkey", plan)
				assert.NotContains(t, plan, "_org_", plan)
				assert.Contains(t, plan, "rows=1 ", "the record is found:\n%s", plan)
			}

			// Another organization's record is not found.
			var one int
			err = conn.QueryRow(ctx, byID(c.table, "1", "true"), id, uuid.New()).Scan(&one)
			assert.ErrorIs(t, err, pgx.ErrNoRows)
		})
	}
}
