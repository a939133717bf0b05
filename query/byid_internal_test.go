package query

import (
	"context"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/readmodel"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// A read of one record by its id finds it by the primary key, in a large tenant whose
// tables were never analyzed (the tables of a new deployment, or of one whose autovacuum
// is behind): not by reading the tenant's entries in its (organization_id, ...) index.
// The plain "id = $1 AND organization_id = $2 AND deleted_at IS NULL" takes the tenant's
// index for chatbots here (checked); the other tables are read the same way, so that
// their plans do not hang on statistics either.
func TestReadsByIDTakeThePrimaryKey(t *testing.T) {
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	org := uuid.New()
	const n = 3000
	_, err := d.Pool.Exec(ctx, `INSERT INTO chatbots (id, organization_id, name, description, welcome_message,
			fallback_message, status, responder, version, created_at, updated_at)
		SELECT gen_random_uuid(), $1, 'Bot ' || i, '', '', '', 'draft', '{"type":"knowledge_base"}', 1, now(), now()
		FROM generate_series(1, $2) AS i`, org, n)
	require.NoError(t, err)
	_, err = d.Pool.Exec(ctx, `INSERT INTO conversations (id, organization_id, chatbot_id, metadata, messages, created_at)
		SELECT gen_random_uuid(), $1, gen_random_uuid(), '{}', 0, now() FROM generate_series(1, $2)`, org, n)
	require.NoError(t, err)
	_, err = d.Pool.Exec(ctx, `INSERT INTO webhooks (id, organization_id, url, events, status, version, created_at, updated_at)
		SELECT gen_random_uuid(), $1, 'https://example.com/hook', '{#}', 'active', 1, now(), now()
		FROM generate_series(1, $2)`, org, n)
	require.NoError(t, err)

	for _, c := range []struct {
		name, table, sql string
	}{
		{"chatbot", "chatbots", byID("chatbots", readmodel.ChatbotColumns, "deleted_at IS NULL")},
		{"chatbot exists", "chatbots", `SELECT EXISTS (` + byID("chatbots", "1", "deleted_at IS NULL") + `)`},
		{"chatbot of analytics", "chatbots", byID("chatbots", "1", "true")},
		{"conversation", "conversations", byID("conversations", conversationColumns, "true")},
		{"webhook", "webhooks", byID("webhooks", webhookColumns, "status <> 'deleted'")},
	} {
		t.Run(c.name, func(t *testing.T) {
			var id uuid.UUID
			require.NoError(t, d.Pool.QueryRow(ctx, `SELECT id FROM `+c.table+` ORDER BY id OFFSET 1234 LIMIT 1`).Scan(&id))
			rows, err := d.Pool.Query(ctx, `EXPLAIN (ANALYZE, BUFFERS) `+c.sql, id, org)
			require.NoError(t, err)
			var plan []string
			for rows.Next() {
				var line string
				require.NoError(t, rows.Scan(&line))
				plan = append(plan, line)
			}
			require.NoError(t, rows.Err())
			text := strings.Join(plan, "\n")
			assert.Contains(t, text, c.table+"_pkey", text)
			assert.NotContains(t, text, "_org_", text)
			assert.Contains(t, text, "rows=1 ", "the record is found:\n%s", text)

			// Another organization's record is not found.
			var one int
			err = d.Pool.QueryRow(ctx, byID(c.table, "1", "true"), id, uuid.New()).Scan(&one)
			assert.ErrorContains(t, err, "no rows")
		})
	}
}
