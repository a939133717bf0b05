package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
	"github.com/chatbotsaas/chatbotd/projections"
)

type auditJSON struct {
	ID             string          `json:"id"`
	Action         string          `json:"action"`
	ActorID        *string         `json:"actor_id"`
	ActorType      string          `json:"actor_type"`
	SubjectType    string          `json:"subject_type"`
	SubjectID      string          `json:"subject_id"`
	OrganizationID *string         `json:"organization_id"`
	RequestID      string          `json:"request_id"`
	IPAddress      *string         `json:"ip_address"`
	UserAgent      *string         `json:"user_agent"`
	Changes        json.RawMessage `json:"changes"`
	OccurredAt     string          `json:"occurred_at"`
	Position       int64           `json:"position"`
}

func ndjsonLines(t *testing.T, raw []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m), sc.Text())
		out = append(out, m)
	}
	return out
}

// run runs one operator command of the binary against the app's database.
func (a *app) run(args ...string) (stdout, stderr string, err error) {
	var o, e bytes.Buffer
	m := &Main{Stdout: &o, Stderr: &e, Environ: []string{"DATABASE_URL=" + a.db.URL, "LOG_LEVEL=warn"}}
	err = m.Run(context.Background(), args)
	return o.String(), e.String(), err
}

func TestAuditTrailHistoryAndVerifyEndToEnd(t *testing.T) {
	a := startApp(t)
	owner, token := a.register("Audited", "Olga Owner", "olga@audited.example")
	_, other := a.register("Elsewhere", "Eve", "eve@elsewhere.example")
	u, res := a.createUser(token, "Mia Member", "mia@audited.example", "member", map[string]string{
		"X-Request-ID": "req-create-mia", "User-Agent": "audit-e2e/1.0"})
	res = a.expect(req{method: "PATCH", path: "/api/v1/users/" + u.ID, token: token, body: map[string]string{"name": "Mia M."}}, 200)
	a.do(req{method: "POST", path: "/api/v1/auth/login", body: map[string]string{"email": "olga@audited.example", "password": "wrong"}})
	member := a.login("mia@audited.example", "password1").AccessToken

	var orgEvents int
	require.NoError(t, a.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE organization_id = $1`,
		owner.OrganizationID).Scan(&orgEvents))
	// Read your writes: the token of the last command waits for the audit trail to show
	// it (the events of other streams, such as the logins, come on their own time).
	list := a.expect(req{method: "GET", path: "/api/v1/audit-logs?action=user.updated", token: token, headers: consistent(res)}, 200)
	assert.EqualValues(t, 1, list.Body.Meta["pagination"].(map[string]any)["total"])
	var entries []auditJSON
	testenv.Eventually(t, 10*time.Second, func() error {
		list = a.expect(req{method: "GET", path: "/api/v1/audit-logs?per_page=100", token: token}, 200)
		list.data(t, &entries)
		if len(entries) != orgEvents {
			return fmt.Errorf("%d of %d events audited", len(entries), orgEvents)
		}
		return nil
	})
	actions := map[string]int{}
	for _, e := range entries {
		actions[e.Action]++
		assert.Equal(t, owner.OrganizationID, *e.OrganizationID)
	}
	for _, want := range []string{"organization.created", "user.created", "user.updated", "session.started", "login.failed"} {
		assert.Positive(t, actions[want], "%s in %v", want, actions)
	}
	for i := 1; i < len(entries); i++ {
		assert.GreaterOrEqual(t, entries[i-1].OccurredAt, entries[i].OccurredAt, "newest first")
	}

	// Filters, each on its own.
	var created []auditJSON
	a.expect(req{method: "GET", path: "/api/v1/audit-logs?request_id=req-create-mia", token: token}, 200).data(t, &created)
	require.Len(t, created, 1)
	c := created[0]
	assert.Equal(t, "user.created", c.Action)
	assert.Equal(t, u.ID, c.SubjectID)
	assert.Equal(t, "user", c.SubjectType)
	assert.Equal(t, owner.ID, *c.ActorID)
	assert.Equal(t, "user", c.ActorType)
	require.NotNil(t, c.UserAgent)
	assert.Equal(t, "audit-e2e/1.0", *c.UserAgent)
	require.NotNil(t, c.IPAddress)
	assert.Equal(t, "127.0.0.1", *c.IPAddress)
	assert.NotContains(t, string(c.Changes), "password1", "no secret in the audit trail")
	var updated []auditJSON
	a.expect(req{method: "GET", path: "/api/v1/audit-logs?action=user.updated&subject_id=" + u.ID, token: token}, 200).data(t, &updated)
	require.Len(t, updated, 1)
	assert.JSONEq(t, `{"name": {"old": "Mia Member", "new": "Mia M."}}`, string(updated[0].Changes))
	var byActor []auditJSON
	a.expect(req{method: "GET", path: "/api/v1/audit-logs?actor_id=" + owner.ID + "&from=" + url.QueryEscape(c.OccurredAt), token: token}, 200).data(t, &byActor)
	assert.NotEmpty(t, byActor)
	for _, e := range byActor {
		assert.Equal(t, owner.ID, *e.ActorID)
		assert.GreaterOrEqual(t, e.OccurredAt, c.OccurredAt)
	}
	bad := a.expectError(req{method: "GET", path: "/api/v1/audit-logs?actor_id=nope&from=yesterday", token: token}, 422, "VALIDATION_ERROR")
	assert.Contains(t, bad.Body.Errors, "actor_id")
	assert.Contains(t, bad.Body.Errors, "from")
	// The other organization sees none of it.
	var theirs []auditJSON
	a.expect(req{method: "GET", path: "/api/v1/audit-logs?per_page=100", token: other}, 200).data(t, &theirs)
	for _, e := range theirs {
		assert.NotEqual(t, owner.OrganizationID, *e.OrganizationID)
	}
	total := int(list.Body.Meta["pagination"].(map[string]any)["total"].(float64))

	// Export: every matching entry, in both formats.
	nd := a.expect(req{method: "GET", path: "/api/v1/audit-logs/export", token: token, headers: consistent(res)}, 200)
	assert.Equal(t, "application/x-ndjson", nd.Header.Get("Content-Type"))
	assert.Contains(t, nd.Header.Get("Content-Disposition"), "attachment")
	assert.Len(t, ndjsonLines(t, nd.Raw), total)
	cs := a.expect(req{method: "GET", path: "/api/v1/audit-logs/export?format=csv&action=user.created", token: token}, 200)
	assert.Equal(t, "text/csv; charset=utf-8", cs.Header.Get("Content-Type"))
	records, err := csv.NewReader(bytes.NewReader(cs.Raw)).ReadAll()
	require.NoError(t, err)
	require.Len(t, records, 1+actions["user.created"])
	assert.Equal(t, "action", records[0][1])
	a.expectError(req{method: "GET", path: "/api/v1/audit-logs/export?format=xml", token: token}, 422, "VALIDATION_ERROR")

	// The raw history: the organization's events in commit order, resumable.
	hist := a.expect(req{method: "GET", path: "/api/v1/events", token: token}, 200)
	assert.Equal(t, "application/x-ndjson", hist.Header.Get("Content-Type"))
	lines := ndjsonLines(t, hist.Raw)
	require.Len(t, lines, orgEvents)
	for _, l := range lines {
		assert.Equal(t, owner.OrganizationID, l["organization_id"])
		assert.Contains(t, l, "stream_version")
	}
	// Each event's data is valid under the catalog's schema of its type.
	var catalog []struct {
		Type          string          `json:"type"`
		SchemaVersion int             `json:"schema_version"`
		UpcastsFrom   []int           `json:"upcasts_from"`
		Schema        json.RawMessage `json:"schema"`
	}
	a.expect(req{method: "GET", path: "/api/v1/events/catalog", token: member}, 200).data(t, &catalog)
	schemas := map[string]*jsonschema.Schema{}
	for _, c := range catalog {
		if c.Type == "message.failed" {
			assert.Equal(t, 2, c.SchemaVersion)
			assert.Equal(t, []int{1}, c.UpcastsFrom)
		} else {
			assert.Equal(t, []int{}, c.UpcastsFrom, c.Type)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(c.Schema))
		require.NoError(t, err)
		comp := jsonschema.NewCompiler()
		require.NoError(t, comp.AddResource(c.Type+".json", doc))
		schemas[c.Type], err = comp.Compile(c.Type + ".json")
		require.NoError(t, err)
	}
	for _, l := range lines {
		sch := schemas[l["type"].(string)]
		require.NotNil(t, sch, l["type"])
		assert.NoError(t, sch.Validate(l["data"]), "%v", l)
	}
	first := a.expect(req{method: "GET", path: "/api/v1/events?limit=2", token: token}, 200)
	page := ndjsonLines(t, first.Raw)
	require.Len(t, page, 2)
	rest := ndjsonLines(t, a.expect(req{method: "GET", path: fmt.Sprintf("/api/v1/events?after=%.0f", page[1]["position"].(float64)), token: token}, 200).Raw)
	assert.Equal(t, lines[2:], rest, "resuming after the last line gives the rest")
	typed := ndjsonLines(t, a.expect(req{method: "GET", path: "/api/v1/events?type=user.created,user.updated&stream_id=" + u.ID, token: token}, 200).Raw)
	require.Len(t, typed, 2)
	assert.Equal(t, "user.created", typed[0]["type"])
	assert.Equal(t, "user.updated", typed[1]["type"])
	theirLines := ndjsonLines(t, a.expect(req{method: "GET", path: "/api/v1/events", token: other}, 200).Raw)
	require.NotEmpty(t, theirLines)
	a.expectError(req{method: "GET", path: fmt.Sprintf("/api/v1/events?after=%.0f", theirLines[0]["position"].(float64)), token: token},
		422, "VALIDATION_ERROR")
	a.expectError(req{method: "GET", path: "/api/v1/events?type=user.exploded", token: token}, 422, "VALIDATION_ERROR")
	for _, limit := range []string{"0", "10001", "ten"} { // one rule: out of range is refused, never clamped
		res := a.expectError(req{method: "GET", path: "/api/v1/events?limit=" + limit, token: token}, 422, "VALIDATION_ERROR")
		assert.Contains(t, res.Body.Errors["limit"], "must be a whole number from 1 to 10000", limit)
	}

	// Verify: the chain over the organization's history holds...
	var rep eventstore.VerifyReport
	testenv.Eventually(t, 10*time.Second, func() error {
		a.expect(req{method: "GET", path: "/api/v1/audit-logs/verify", token: token}, 200).data(t, &rep)
		if !rep.OK || rep.Checked != int64(orgEvents) {
			return fmt.Errorf("verify: %+v (want %d checked)", rep, orgEvents)
		}
		return nil
	})
	out, _, err := a.run("audit", "verify", "--organization", owner.OrganizationID)
	require.NoError(t, err)
	assert.Contains(t, out, `"ok":true`)
	out, _, err = a.run("replay", "--organization", owner.OrganizationID)
	require.NoError(t, err)
	assert.Equal(t, lines, ndjsonLines(t, []byte(out)), "replay on the command line = /api/v1/events")

	// ...and a rewritten event breaks it, at that event's position, for API and CLI alike.
	target := int64(lines[3]["position"].(float64))
	_, err = a.db.Pool.Exec(context.Background(), `ALTER TABLE events DISABLE TRIGGER USER`)
	require.NoError(t, err)
	_, err = a.db.Pool.Exec(context.Background(), `UPDATE events SET actor_id = gen_random_uuid() WHERE position = $1`, target)
	require.NoError(t, err)
	a.expect(req{method: "GET", path: "/api/v1/audit-logs/verify", token: token}, 200).data(t, &rep)
	assert.False(t, rep.OK)
	require.NotNil(t, rep.FirstBadPosition)
	assert.Equal(t, target, *rep.FirstBadPosition)
	out, _, err = a.run("audit", "verify")
	require.Error(t, err)
	assert.Contains(t, out, fmt.Sprintf(`"first_bad_position":%d`, target))
	// The other organization's chain is untouched.
	a.expect(req{method: "GET", path: "/api/v1/audit-logs/verify", token: other}, 200).data(t, &rep)
	assert.True(t, rep.OK, rep.Reason)

	// A member may not read the trail, and the refusal is in it.
	a.expectError(req{method: "GET", path: "/api/v1/audit-logs", token: member}, 403, "FORBIDDEN")
	testenv.Eventually(t, 10*time.Second, func() error {
		var denied []auditJSON
		a.expect(req{method: "GET", path: "/api/v1/audit-logs?action=access.denied", token: token}, 200).data(t, &denied)
		if len(denied) != 1 || denied[0].ActorID == nil || *denied[0].ActorID != u.ID {
			return fmt.Errorf("access.denied entries: %+v", denied)
		}
		return nil
	})
}

// Retention: old entries are exported and pruned by a command, verify still holds, a
// rebuild keeps them pruned unless asked to restore them.
func TestAuditPruneExportAndRestore(t *testing.T) {
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	org := uuid.New()
	old := time.Now().Add(-40 * 24 * time.Hour)
	for i := range 30 {
		at := time.Now()
		if i < 12 {
			at = old.Add(time.Duration(i) * time.Minute)
		}
		_, err := d.Pool.Exec(ctx, `INSERT INTO events (id, stream_type, stream_id, stream_version, type, schema_version,
			organization_id, actor_type, data, occurred_at) VALUES (gen_random_uuid(), 'user', gen_random_uuid(), 1,
			'user.deactivated', 1, $1, 'system', '{}', $2)`, org, at)
		require.NoError(t, err)
	}
	key := events.ChainKey(bytes.Repeat([]byte("k"), 32))
	testenv.Eventually(t, 20*time.Second, func() error {
		n, err := (&eventstore.Chainer{Pool: d.Pool, Key: key}).Step(ctx)
		if err != nil || n == 0 {
			var links int
			_ = d.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_chain`).Scan(&links)
			if links == 30 {
				return nil
			}
			return fmt.Errorf("%d linked (%v)", links, err)
		}
		return fmt.Errorf("still linking")
	})
	all, _, err := eventstore.ReadHistory(ctx, d.Pool, eventstore.HistoryFilter{}, eventstore.Checkpoint{}, 100)
	require.NoError(t, err)
	_, err = projections.ApplyBatch(ctx, d.Pool, projections.Audit{}, all)
	require.NoError(t, err)

	env := []string{"DATABASE_URL=" + d.URL, "LOG_LEVEL=warn", "AUDIT_SIGNING_KEY=" + "a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s="}
	run := func(args ...string) (string, error) {
		var o, e bytes.Buffer
		err := (&Main{Stdout: &o, Stderr: &e, Environ: env}).Run(ctx, args)
		return o.String() + e.String(), err
	}
	count := func() (n int) {
		require.NoError(t, d.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_entries`).Scan(&n))
		return n
	}
	out, err := run("audit", "verify")
	require.NoError(t, err, out)

	_, err = run("audit", "prune")
	require.ErrorContains(t, err, "nothing to prune")
	file := filepath.Join(t.TempDir(), "pruned.ndjson")
	out, err = run("audit", "prune", "--days", "30", "--export", file)
	require.NoError(t, err, out)
	assert.Contains(t, out, "pruned 12 audit entries")
	assert.Equal(t, 18, count())
	raw, err := os.ReadFile(file)
	require.NoError(t, err)
	assert.Len(t, ndjsonLines(t, raw), 12)
	_, err = run("audit", "prune", "--days", "30", "--export", file)
	require.ErrorContains(t, err, "exists", "an export never overwrites a file")

	out, err = run("audit", "verify")
	require.NoError(t, err, "pruned entries are not tampering: %s", out)

	out, err = run("projections", "verify", "audit", "--wait", "0s")
	require.NoError(t, err, "a pruned trail is compared as pruned: %s", out)
	assert.Contains(t, out, "audit: equal to a replay of the log")
	assert.Contains(t, out, "audit_entries: 18 rows, 0 only live, 0 only in the replay")
	out, err = run("projections", "rebuild", "audit")
	require.NoError(t, err, out)
	assert.Contains(t, out, "rebuild audit: done")
	assert.Equal(t, 18, count(), "a rebuild keeps pruned entries pruned")
	out, err = run("projections", "rebuild", "audit", "--restore-pruned")
	require.NoError(t, err, out)
	assert.Equal(t, 30, count(), "and restores them on request")
	out, err = run("audit", "verify")
	require.NoError(t, err, out)

	_, err = run("projections", "rebuild", "trainer")
	require.ErrorContains(t, err, "can be rebuilt")
	out, err = run("projections", "rebuild", "--all")
	require.NoError(t, err, out)
	for _, p := range []string{"accounts", "chatbots", "conversations", "audit"} {
		assert.Contains(t, out, "rebuild "+p+": done")
	}
	out, err = run("projections", "verify", "--all", "--wait", "0s")
	require.NoError(t, err, out)
	for _, p := range []string{"accounts", "chatbots", "conversations", "audit", "analytics"} {
		assert.Contains(t, out, p+": equal to a replay of the log")
	}
	_, err = d.Pool.Exec(ctx, `DELETE FROM projection_streams WHERE projection = 'accounts' AND stream_id = (SELECT stream_id
		FROM projection_streams WHERE projection = 'accounts' LIMIT 1)`)
	require.NoError(t, err)
	out, err = run("projections", "verify", "accounts", "audit", "--wait", "0s")
	require.ErrorContains(t, err, "accounts differ from a replay of the log")
	assert.Contains(t, out, "accounts: DIFFERS from a replay of the log")
	assert.Contains(t, out, "projection_streams: 29 rows, 0 only live, 1 only in the replay")
	assert.Contains(t, out, "audit: equal to a replay of the log")
	out, err = run("replay", "--type", "user.deactivated", "--from", time.Now().Add(-time.Hour).Format(time.RFC3339))
	require.NoError(t, err)
	assert.Equal(t, 18, strings.Count(out, `"type":"user.deactivated"`))
}
