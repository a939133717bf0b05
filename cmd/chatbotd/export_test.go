package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// seedAudit writes n audit entries for org straight into the read model (the export
// and the plans only read it), spread over a year, with a few actions and actors.
func seedAudit(t *testing.T, a *app, org string, n int) {
	t.Helper()
	_, err := a.db.Pool.Exec(context.Background(), `INSERT INTO audit_entries (id, position, organization_id, action,
		actor_type, actor_id, subject_type, subject_id, request_id, ip_address, user_agent, changes, occurred_at)
		SELECT gen_random_uuid(), 1000000 + i, $1, (ARRAY['user.updated','chatbot.updated','message.posted','login.failed'])[1 + i % 4],
			'user', ('00000000-0000-4000-8000-' || lpad((i % 50)::text, 12, '0'))::uuid, 'user', gen_random_uuid(),
			'req-' || i, '203.0.113.' || (i % 250), 'Mozilla/5.0 (X11; Linux x86_64) bench',
			jsonb_build_object('name', jsonb_build_object('old', 'before ' || i, 'new', 'after ' || i)),
			now() - (i || ' minutes')::interval / 10
		FROM generate_series(1, $2) AS i`, org, n)
	require.NoError(t, err)
	_, err = a.db.Pool.Exec(context.Background(), `ANALYZE audit_entries`)
	require.NoError(t, err)
}

// heapPeak samples the heap in use until stop is closed and returns the highest value.
func heapPeak(stop <-chan struct{}) <-chan uint64 {
	out := make(chan uint64, 1)
	go func() {
		var peak uint64
		var ms runtime.MemStats
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
			select {
			case <-stop:
				out <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return out
}

func TestAuditExportOf100000EntriesStreamsInBoundedMemory(t *testing.T) {
	a := startApp(t)
	owner, token := a.register("Big Org", "Bea", "bea@big.example")
	const n = 100_000
	seedAudit(t, a, owner.OrganizationID, n)
	// The registration's own events are audited too, once the projector has them.
	var want int
	testenv.Eventually(t, 10*time.Second, func() error {
		var entries, evs int
		if err := a.db.Pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM audit_entries WHERE organization_id = $1),
			(SELECT count(*) FROM events WHERE organization_id = $1)`, owner.OrganizationID).Scan(&entries, &evs); err != nil {
			return err
		}
		if want = n + evs; entries != want {
			return fmt.Errorf("%d of %d entries", entries, want)
		}
		return nil
	})

	for _, format := range []string{"ndjson", "csv"} {
		runtime.GC()
		var base runtime.MemStats
		runtime.ReadMemStats(&base)
		stop := make(chan struct{})
		peak := heapPeak(stop)

		hr, err := http.NewRequest("GET", a.base+"/api/v1/audit-logs/export?format="+format, nil)
		require.NoError(t, err)
		hr.Header.Set("Authorization", "Bearer "+token)
		res, err := (&http.Client{Timeout: 2 * time.Minute}).Do(hr)
		require.NoError(t, err)
		require.Equal(t, 200, res.StatusCode)
		// Read as it streams, counting, never holding the body.
		var bytes atomic.Int64
		lines, seeded := 0, 0
		body := io.TeeReader(res.Body, writerFunc(func(p []byte) (int, error) { bytes.Add(int64(len(p))); return len(p), nil }))
		if format == "csv" {
			r := csv.NewReader(body)
			r.ReuseRecord = true
			for {
				rec, err := r.Read()
				if err == io.EOF {
					break
				}
				require.NoError(t, err)
				if strings.HasPrefix(rec[11], "Mozilla") { // user_agent
					seeded++
				}
				lines++
			}
			lines-- // the header
			assert.Equal(t, n, seeded)
		} else {
			sc := bufio.NewScanner(body)
			for sc.Scan() {
				lines++
			}
			require.NoError(t, sc.Err())
		}
		res.Body.Close()
		close(stop)
		grew := int64(<-peak) - int64(base.HeapAlloc)
		assert.Equal(t, want, lines, format)
		t.Logf("%s: %d entries, %.1f MiB streamed, heap grew at most %.1f MiB", format, lines, float64(bytes.Load())/(1<<20), float64(grew)/(1<<20))
		assert.Less(t, grew, bytes.Load()/2, "the export holds far less than it sends")
		assert.Less(t, grew, int64(48<<20), "bounded memory")
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// The audit filters of a large organization are index scans that give the order: no
// sequential scan, no sort of the organization's entries.
func TestAuditFiltersUseIndexes(t *testing.T) {
	a := startApp(t)
	owner, _ := a.register("Planned", "Pat", "pat@planned.example")
	_, _ = a.register("Neighbour", "Ned", "ned@neighbour.example")
	seedAudit(t, a, owner.OrganizationID, 60_000)
	org := owner.OrganizationID
	for _, q := range []struct {
		name, where string
		args        []any
		index       string
	}{
		{"none", "organization_id = $1", nil, "audit_entries_org_time_idx"},
		{"action", "organization_id = $1 AND action = $2", []any{"login.failed"}, "audit_entries_org_action_idx"},
		{"actor", "organization_id = $1 AND actor_id = $2", []any{"00000000-0000-4000-8000-000000000007"}, "audit_entries_org_actor_idx"},
		{"subject", "organization_id = $1 AND subject_id = $2", []any{"00000000-0000-4000-8000-000000000007"}, "audit_entries_org_subject_idx"},
		{"request", "organization_id = $1 AND request_id = $2", []any{"req-77"}, "audit_entries_org_request_idx"},
		{"time range", "organization_id = $1 AND occurred_at >= now() - interval '1 day' AND occurred_at < now()", nil, "audit_entries_org_time_idx"},
		{"export page", "organization_id = $1 AND (occurred_at, position) < (now() - interval '30 days', 1030000)", nil, "audit_entries_org_time_idx"},
	} {
		args := append([]any{org}, q.args...)
		plan := testenv.Explain(t, a.db.Pool, "", `SELECT id FROM audit_entries WHERE `+q.where+
			` ORDER BY occurred_at DESC, position DESC LIMIT 15`, args...)
		assert.Contains(t, plan, q.index, "%s:\n%s", q.name, plan)
		assert.NotContains(t, plan, "Seq Scan", "%s:\n%s", q.name, plan)
		assert.NotContains(t, plan, "Sort", "%s:\n%s", q.name, plan)
	}
}
