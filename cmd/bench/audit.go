package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/projections"
)

// seedHistory appends conversations × (1 conversation.started + perConv message.posted)
// events for org straight into the log, in transactions of 1,000 conversations.
func seedHistory(ctx context.Context, pool *pgxpool.Pool, org uuid.UUID, conversations, perConv int) error {
	actor, bot := uuid.New(), uuid.New()
	const meta = `'{"ip_address": "203.0.113.10", "user_agent": "bench/1.0"}'::jsonb`
	for done := 0; done < conversations; done += 1000 {
		n := min(1000, conversations-done)
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `CREATE TEMP TABLE bench_conv ON COMMIT DROP AS
				SELECT gen_random_uuid() AS id FROM generate_series(1, $1)`, n); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO events (id, stream_type, stream_id, stream_version, type, schema_version,
				organization_id, actor_type, actor_id, request_id, metadata, data, occurred_at)
				SELECT gen_random_uuid(), 'conversation', c.id, 1, 'conversation.started', 1, $1, 'user', $2, 'req-' || c.id,
					`+meta+`, jsonb_build_object('chatbot_id', $3::text, 'metadata', '{"channel": "web"}'::jsonb), clock_timestamp()
				FROM bench_conv c`, org, actor, bot); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO events (id, stream_type, stream_id, stream_version, type, schema_version,
				organization_id, actor_type, actor_id, request_id, metadata, data, occurred_at)
				SELECT gen_random_uuid(), 'message', gen_random_uuid(), 1, 'message.posted', 1, $1, 'user', $2, 'req-' || m,
					`+meta+`, jsonb_build_object('conversation_id', c.id::text, 'chatbot_id', $3::text, 'content', 'question number ' || m),
					clock_timestamp()
				FROM bench_conv c, generate_series(1, $4) AS m`, org, actor, bot, perConv)
			return err
		})
		if err != nil {
			return fmt.Errorf("seed history: %w", err)
		}
	}
	_, err := pool.Exec(ctx, `ANALYZE events`)
	return err
}

// copyRate is the baseline: COPY of n audit rows into a fresh table shaped like
// audit_entries (same keys and indexes), as one batched load.
func copyRate(ctx context.Context, pool *pgxpool.Pool, n int) (float64, error) {
	if _, err := pool.Exec(ctx, `DROP TABLE IF EXISTS copy_baseline; CREATE TABLE copy_baseline (LIKE audit_entries INCLUDING ALL)`); err != nil {
		return 0, err
	}
	org, actor := uuid.New(), uuid.New()
	ip, ua := "203.0.113.10", "bench/1.0"
	now := time.Now()
	changes := []byte(`{"content": "question number 1", "chatbot_id": "5f0c", "conversation_id": "9b1e"}`)
	i := 0
	src := pgx.CopyFromFunc(func() ([]any, error) {
		if i == n {
			return nil, nil
		}
		i++
		return []any{uuid.New(), int64(i), org, "message.posted", "user", actor, "message", uuid.New(), "req-1", ip, ua,
			changes, now}, nil
	})
	start := time.Now()
	_, err := pool.CopyFrom(ctx, pgx.Identifier{"copy_baseline"}, []string{"id", "position", "organization_id", "action",
		"actor_type", "actor_id", "subject_type", "subject_id", "request_id", "ip_address", "user_agent", "changes", "occurred_at"}, src)
	if err != nil {
		return 0, err
	}
	rate := float64(n) / time.Since(start).Seconds()
	_, err = pool.Exec(ctx, `DROP TABLE copy_baseline`)
	return rate, err
}

// auditFigures measures, on a log of about a million events: linking the chain,
// rebuilding the audit trail and the conversations, verifying the chain; against COPY.
func auditFigures(ctx context.Context, o options, report *strings.Builder) error {
	pool, _, err := freshDatabase(ctx, o, "_audit")
	if err != nil {
		return err
	}
	defer pool.Close()
	org := uuid.New()
	conversations, perConv := o.historyConversations, 99
	start := time.Now()
	if err := seedHistory(ctx, pool, org, conversations, perConv); err != nil {
		return err
	}
	total := conversations * (1 + perConv)
	fmt.Fprintf(os.Stderr, "audit: seeded %d events in %s\n", total, time.Since(start).Round(time.Millisecond))

	key, err := events.NewChainKey([]byte("bench-audit-signing-key-32-bytes-long!"))
	if err != nil {
		return err
	}
	chainer := &eventstore.Chainer{Pool: pool, Key: key, BatchSize: 2000}
	start = time.Now()
	linked := 0
	for {
		n, err := chainer.Step(ctx)
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
		linked += n
	}
	chainRate := float64(linked) / time.Since(start).Seconds()
	fmt.Fprintf(os.Stderr, "audit: chained %d events, %.0f/s\n", linked, chainRate)

	baseline, err := copyRate(ctx, pool, total)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "audit: COPY %.0f rows/s\n", baseline)

	rebuilds := map[string]float64{}
	for _, p := range []projections.Rebuildable{projections.Audit{}, projections.Conversations{}} {
		// Where the time goes: the phases' durations, told by the rebuild's progress.
		phases, last, lastPhase := map[string]time.Duration{}, time.Duration(0), "replay"
		rb := &projections.Rebuild{Pool: pool, Projector: p, BatchSize: 5000, Progress: func(pr projections.Progress) {
			if pr.Phase != lastPhase {
				phases[lastPhase], last, lastPhase = pr.Elapsed-last, pr.Elapsed, pr.Phase
			}
		}}
		start := time.Now()
		if err := rb.Run(ctx); err != nil {
			return err
		}
		rebuilds[p.Name()] = float64(total) / time.Since(start).Seconds()
		fmt.Fprintf(os.Stderr, "audit: rebuild %s %.0f events/s (replay %s, analyze and swap %s)\n", p.Name(), rebuilds[p.Name()],
			phases["replay"].Round(time.Millisecond), phases["swap"].Round(time.Millisecond))
	}

	start = time.Now()
	rep, err := eventstore.VerifyChain(ctx, pool, org, key)
	if err != nil {
		return err
	}
	if !rep.OK {
		return fmt.Errorf("verify: %+v", rep)
	}
	verifyRate := float64(rep.Checked) / time.Since(start).Seconds()
	fmt.Fprintf(os.Stderr, "audit: verified %d events, %.0f/s\n", rep.Checked, verifyRate)

	report.WriteString("\n### Audit trail: chain, rebuild, verify\n\n")
	fmt.Fprintf(report, "A log of %d events of one organization (%d conversations of 1 `conversation.started` and %d `message.posted` each), "+
		"written straight into the `events` table. Each figure is events per second over all of them, in this run, on this machine. "+
		"The baseline is COPY, in the same run, of as many audit rows into a fresh table with the audit trail's keys and indexes: "+
		"the fastest way PostgreSQL loads those rows.\n\n", total, conversations, perConv)
	report.WriteString("| work | events/s | ratio to COPY |\n|---|---:|---:|\n")
	fmt.Fprintf(report, "| COPY of audit rows (baseline) | %.0f | 1.00× |\n", baseline)
	fmt.Fprintf(report, "| `projections rebuild audit` (new tables, replay, swap) | %.0f | %.2f× |\n", rebuilds["audit"], rebuilds["audit"]/baseline)
	fmt.Fprintf(report, "| `projections rebuild conversations` | %.0f | %.2f× |\n", rebuilds["conversations"], rebuilds["conversations"]/baseline)
	fmt.Fprintf(report, "| linking the hash chain (chainer, batches of 2,000) | %.0f | %.2f× |\n", chainRate, chainRate/baseline)
	fmt.Fprintf(report, "| `audit verify` (chain, signatures, every audit entry) | %.0f | %.2f× |\n", verifyRate, verifyRate/baseline)
	return nil
}

// exportRate streams GET /api/v1/audit-logs/export of n seeded entries through the
// server and returns entries per second and bytes.
func (s *server) exportRate(pool *pgxpool.Pool, n int, format string) (float64, int64, error) {
	req, err := http.NewRequest("GET", s.base+"/api/v1/audit-logs/export?format="+format, nil)
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	start := time.Now()
	res, err := (&http.Client{Timeout: 10 * time.Minute}).Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		return 0, 0, fmt.Errorf("export: status %d", res.StatusCode)
	}
	cr := &countingReader{r: res.Body}
	sc := bufio.NewScanner(cr)
	sc.Buffer(make([]byte, 1<<20), 64<<20) // an entry of a large import is megabytes
	lines := 0
	for sc.Scan() {
		lines++
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if format == "csv" {
		lines--
	}
	if lines < n {
		return 0, 0, fmt.Errorf("export: %d lines, want at least %d", lines, n)
	}
	return float64(lines) / time.Since(start).Seconds(), cr.n, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// seedAuditEntries writes n audit entries for org into the read model.
func seedAuditEntries(ctx context.Context, pool *pgxpool.Pool, org string, n int) error {
	_, err := pool.Exec(ctx, `INSERT INTO audit_entries (id, position, organization_id, action, actor_type, actor_id,
		subject_type, subject_id, request_id, ip_address, user_agent, changes, occurred_at)
		SELECT gen_random_uuid(), 100000000 + i, $1, 'message.posted', 'user', gen_random_uuid(), 'message', gen_random_uuid(),
			'req-' || i, '203.0.113.10', 'bench/1.0',
			jsonb_build_object('content', 'question number ' || i, 'conversation_id', gen_random_uuid()),
			now() - (i || ' seconds')::interval
		FROM generate_series(1, $2) AS i`, org, n)
	if err != nil {
		return err
	}
	_, err = pool.Exec(ctx, `ANALYZE audit_entries`)
	return err
}

// copyOutRate is the export's baseline: PostgreSQL's COPY TO of the same entries, in the
// same order, as CSV, read and thrown away: the fastest the database hands them out.
func copyOutRate(ctx context.Context, pool *pgxpool.Pool, org string) (float64, error) {
	id, err := uuid.Parse(org)
	if err != nil {
		return 0, err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Release()
	start := time.Now()
	tag, err := conn.Conn().PgConn().CopyTo(ctx, io.Discard, `COPY (SELECT `+eventstore.AuditColumns+` FROM audit_entries
		WHERE organization_id = '`+id.String()+`' ORDER BY occurred_at DESC, position DESC) TO STDOUT (FORMAT csv)`)
	if err != nil {
		return 0, err
	}
	return float64(tag.RowsAffected()) / time.Since(start).Seconds(), nil
}
