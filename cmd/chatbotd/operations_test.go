package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// operator makes a platform operator with `chatbotd admin create` and logs them in.
func (a *app) operator(email string) (id, token string) {
	a.t.Helper()
	out, err := a.cli("operator password 1\n", "admin", "create", "--email", email, "--name", "Platform Pat")
	require.NoError(a.t, err)
	var made struct {
		Operator struct{ ID string } `json:"operator"`
	}
	require.NoError(a.t, json.Unmarshal([]byte(out), &made), out)
	require.NotEmpty(a.t, made.Operator.ID)
	return made.Operator.ID, a.login(email, "operator password 1").AccessToken
}

func TestPlatformOperatorsSuspendAndResumeOrganizations(t *testing.T) {
	a := startApp(t, "RATE_LIMIT_PUBLIC_PER_MINUTE=10000")
	tenant, owner := a.register("Tenant Co", "Tina", "tina@tenant.example")
	var tok struct{ Token string }
	a.expect(req{method: "POST", path: "/api/v1/tokens", token: owner, body: map[string]any{"name": "ci", "abilities": []string{"users.read"}}}, 201).data(t, &tok)
	session := a.login("tina@tenant.example", "correct horse")

	operatorID, op := a.operator("pat@platform.example")
	// The same email cannot make a second account, operator or not.
	_, err := a.cli("another password\n", "admin", "create", "--email", "tina@tenant.example", "--name", "Dup")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "already registered")
	_, err = a.cli("short\n", "admin", "create", "--email", "x@platform.example", "--name", "X")
	require.Error(t, err, "a weak password is refused")

	// Only an operator lists every organization; a tenant's owner is refused.
	a.expectError(req{method: "GET", path: "/api/v1/admin/organizations", token: owner}, 403, "FORBIDDEN")
	var orgs []struct {
		ID, Name, Status string
		Platform         bool
		Users            int
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		orgs = nil
		a.expect(req{method: "GET", path: "/api/v1/admin/organizations?per_page=100", token: op}, 200).data(t, &orgs)
		if len(orgs) != 2 {
			return fmt.Errorf("%d organizations", len(orgs))
		}
		return nil
	})
	var platformID string
	for _, o := range orgs {
		if o.Platform {
			platformID = o.ID
		} else {
			assert.Equal(t, tenant.OrganizationID, o.ID)
			assert.Equal(t, "active", o.Status)
			assert.Equal(t, 1, o.Users)
		}
	}
	require.NotEmpty(t, platformID)

	// Bad input changes nothing.
	suspend := "/api/v1/admin/organizations/" + tenant.OrganizationID + "/suspend"
	a.expectError(req{method: "POST", path: suspend, token: op, body: map[string]any{}}, 422, "VALIDATION_ERROR")
	a.expectError(req{method: "POST", path: "/api/v1/admin/organizations/" + uuid.NewString() + "/suspend", token: op,
		body: map[string]any{"reason": "x"}}, 404, "NOT_FOUND")
	a.expectError(req{method: "POST", path: "/api/v1/admin/organizations/" + platformID + "/suspend", token: op,
		body: map[string]any{"reason": "x"}}, 409, "CONFLICT")
	a.expectError(req{method: "POST", path: suspend, token: owner, body: map[string]any{"reason": "x"}}, 403, "FORBIDDEN")
	a.expect(req{method: "GET", path: "/api/v1/users", token: owner}, 200)

	// Suspension counts on the very next request, for sessions, tokens, logins, refreshes.
	res := a.expect(req{method: "POST", path: suspend, token: op, body: map[string]any{"reason": "Unpaid invoices"}}, 200)
	var org struct {
		Status           string
		SuspensionReason string `json:"suspension_reason"`
	}
	res.data(t, &org)
	assert.Equal(t, "suspended", org.Status)
	assert.Equal(t, "Unpaid invoices", org.SuspensionReason)
	a.expectError(req{method: "GET", path: "/api/v1/users", token: owner}, 403, "ORGANIZATION_SUSPENDED")
	a.expectError(req{method: "GET", path: "/api/v1/users", token: tok.Token}, 403, "ORGANIZATION_SUSPENDED")
	a.expectError(req{method: "POST", path: "/api/v1/auth/login", body: map[string]any{"email": "tina@tenant.example", "password": "correct horse"}}, 403, "ORGANIZATION_SUSPENDED")
	a.expectError(req{method: "POST", path: "/api/v1/auth/login", body: map[string]any{"email": "tina@tenant.example", "password": "wrong one"}}, 401, "UNAUTHENTICATED")
	a.expectError(req{method: "POST", path: "/api/v1/auth/refresh", body: map[string]any{"refresh_token": session.RefreshToken}}, 403, "ORGANIZATION_SUSPENDED")
	// Suspending again changes nothing.
	a.expect(req{method: "POST", path: suspend, token: op, body: map[string]any{"reason": "again"}}, 200)

	var suspended []struct {
		ID               string
		SuspensionReason string `json:"suspension_reason"`
	}
	a.expect(req{method: "GET", path: "/api/v1/admin/organizations?status=suspended", token: op, headers: consistent(res)}, 200).data(t, &suspended)
	require.Len(t, suspended, 1)
	assert.Equal(t, tenant.OrganizationID, suspended[0].ID)
	assert.Equal(t, "Unpaid invoices", suspended[0].SuspensionReason)
	a.expectError(req{method: "GET", path: "/api/v1/admin/organizations?status=gone", token: op}, 422, "VALIDATION_ERROR")

	// The tenant's history records who suspended it.
	var actor string
	require.NoError(t, a.db.Pool.QueryRow(context.Background(), `SELECT actor_id::text FROM events
		WHERE type = 'organization.suspended' AND organization_id = $1`, tenant.OrganizationID).Scan(&actor))
	assert.Equal(t, operatorID, actor)

	// Resumed: the same session and token work again.
	a.expect(req{method: "POST", path: "/api/v1/admin/organizations/" + tenant.OrganizationID + "/resume", token: op}, 200)
	a.expect(req{method: "GET", path: "/api/v1/users", token: owner}, 200)
	a.expect(req{method: "GET", path: "/api/v1/users", token: tok.Token}, 200)
	a.expect(req{method: "POST", path: "/api/v1/auth/refresh", body: map[string]any{"refresh_token": session.RefreshToken}}, 200)

	// An operator's API token never carries the operator's reach.
	var opTok struct{ Token string }
	a.expect(req{method: "POST", path: "/api/v1/tokens", token: op, body: map[string]any{"name": "ops", "abilities": []string{"users.read"}}}, 201).data(t, &opTok)
	a.expectError(req{method: "GET", path: "/api/v1/admin/organizations", token: opTok.Token}, 403, "FORBIDDEN")
}

// scrape reads /metrics into families.
func (a *app) scrape(token string) map[string]*dto.MetricFamily {
	a.t.Helper()
	r := a.expect(req{method: "GET", path: "/metrics", token: token}, 200)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(r.Raw)))
	require.NoError(a.t, err)
	return families
}

// sample finds one series of a family by its labels; ok is false when there is none.
func sample(families map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f, ok := families[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range labels {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func TestMetricsCountAKnownSequenceOfCommands(t *testing.T) {
	a := startApp(t, "METRICS_TOKEN=scrape-secret")
	a.expectError(req{method: "GET", path: "/metrics"}, 401, "UNAUTHENTICATED")

	_, owner := a.register("Metered Co", "Mia", "mia@metered.example")
	u1, _ := a.createUser(owner, "One", "one@metered.example", "member", nil)
	_, created := a.createUser(owner, "Two", "two@metered.example", "viewer", nil)
	a.expectError(req{method: "POST", path: "/api/v1/users", token: owner, body: map[string]any{"name": "", "email": "nope"}}, 422, "VALIDATION_ERROR")
	for range 3 {
		a.expect(req{method: "GET", path: "/api/v1/users/" + u1.ID, token: owner, headers: consistent(created)}, 200)
	}

	var m map[string]*dto.MetricFamily
	testenv.Eventually(t, 10*time.Second, func() error {
		time.Sleep(100 * time.Millisecond)
		m = a.scrape("scrape-secret")
		if v, _ := sample(m, "chatbotd_relay_lag_events", nil); v != 0 {
			return fmt.Errorf("relay %v behind", v)
		}
		if v, ok := sample(m, "chatbotd_projection_lag_events", map[string]string{"projection": "accounts"}); !ok || v != 0 {
			return fmt.Errorf("accounts %v behind", v)
		}
		return nil
	})
	want := []struct {
		name   string
		labels map[string]string
		value  float64
	}{
		{"chatbotd_commands_total", map[string]string{"command": "POST /api/v1/users", "outcome": "ok"}, 2},
		{"chatbotd_commands_total", map[string]string{"command": "POST /api/v1/users", "outcome": "VALIDATION_ERROR"}, 1},
		{"chatbotd_commands_total", map[string]string{"command": "POST /api/v1/auth/register", "outcome": "ok"}, 1},
		{"chatbotd_events_appended_total", map[string]string{"type": "user.created"}, 3},
		{"chatbotd_events_appended_total", map[string]string{"type": "organization.created"}, 1},
		{"chatbotd_http_request_duration_seconds", map[string]string{"route": "/api/v1/users", "method": "POST", "status": "201"}, 2},
		{"chatbotd_http_request_duration_seconds", map[string]string{"route": "/api/v1/users/:id", "method": "GET", "status": "200"}, 3},
		{"chatbotd_projection_dead_lettered", map[string]string{"projection": "accounts"}, 0},
	}
	for _, w := range want {
		v, ok := sample(m, w.name, w.labels)
		assert.True(t, ok, "%s%v is missing", w.name, w.labels)
		assert.Equal(t, w.value, v, "%s%v", w.name, w.labels)
	}
	// Every event was published, and each projector counted what it applied: the
	// accounts projector applied user.created ×3, organization.created, session.started
	// (the register's login) and user.role_assigned-free creations.
	published, _ := sample(m, "chatbotd_relay_published_total", nil)
	var logged int
	require.NoError(t, a.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM events`).Scan(&logged))
	assert.GreaterOrEqual(t, published, float64(logged))
	// Each confirmed batch's time to its confirms is observed: a batch has one event or more.
	batches, ok := sample(m, "chatbotd_relay_confirm_duration_seconds", nil)
	assert.True(t, ok)
	assert.Positive(t, batches)
	assert.LessOrEqual(t, batches, published)
	audited, _ := sample(m, "chatbotd_projector_events_applied_total", map[string]string{"projector": "audit"})
	assert.GreaterOrEqual(t, audited, float64(logged), "the audit projector applies every event")
	// Every event's age is observed where the relay read it, where its publish was
	// confirmed, and where each projector that applied it committed; ages are positive.
	read, _ := sample(m, "chatbotd_relay_event_age_seconds", map[string]string{"step": "read"})
	assert.GreaterOrEqual(t, read, published)
	confirmedAges, _ := sample(m, "chatbotd_relay_event_age_seconds", map[string]string{"step": "confirmed"})
	assert.Equal(t, published, confirmedAges)
	auditAges, _ := sample(m, "chatbotd_projector_event_age_seconds", map[string]string{"projector": "audit"})
	assert.Equal(t, audited, auditAges)
	for _, h := range m["chatbotd_projector_event_age_seconds"].GetMetric() {
		assert.Positive(t, h.GetHistogram().GetSampleSum(), "ages of %v", h.GetLabel())
	}
	position, _ := sample(m, "chatbotd_projection_position", map[string]string{"projection": "audit"})
	assert.Positive(t, position)
	hits, _ := sample(m, "chatbotd_cache_requests_total", map[string]string{"result": "hit"})
	misses, _ := sample(m, "chatbotd_cache_requests_total", map[string]string{"result": "miss"})
	assert.Equal(t, float64(3), hits+misses, "three cached reads")
	assert.Positive(t, hits)
	// The users' search entries were pending in their GIN index until serve merged them
	// (GIN_MERGE_INTERVAL, a second by default), beside the projectors' batches.
	testenv.Eventually(t, 10*time.Second, func() error {
		time.Sleep(100 * time.Millisecond)
		if v, _ := sample(a.scrape("scrape-secret"), "chatbotd_gin_pending_pages_merged_total", map[string]string{"index": "users_search_idx"}); v == 0 {
			return fmt.Errorf("the users' search index's pending list is not merged")
		}
		return nil
	})
	for _, name := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_resident_memory_bytes",
		"chatbotd_relay_lag_seconds", "chatbotd_projection_lag_seconds", "chatbotd_projection_consumers"} {
		assert.Contains(t, m, name)
	}
}

func TestACorrelationIDFollowsACommandThroughTheStream(t *testing.T) {
	a := startApp(t)
	_, owner := a.register("Traced Co", "Tom", "tom@traced.example")
	bot := trainedBot(t, a, owner)
	var conv struct{ ID string }
	a.expect(req{method: "POST", path: "/api/v1/chatbots/" + bot + "/conversations", token: owner, body: map[string]any{}}, 201).data(t, &conv)
	corr := "trace-" + uuid.NewString()
	posted := a.expect(req{method: "POST", path: "/api/v1/conversations/" + conv.ID + "/messages", token: owner,
		body: map[string]any{"content": "What are your opening hours?"}, headers: map[string]string{"X-Correlation-ID": corr}}, 202)
	assert.Equal(t, corr, posted.Header.Get("X-Correlation-ID"))
	replies(t, a, owner, conv.ID, 2)

	// The reply is caused by the message and carries its correlation id.
	var postedID, repliedCause, repliedCorr string
	ctx := context.Background()
	require.NoError(t, a.db.Pool.QueryRow(ctx, `SELECT id::text FROM events WHERE type = 'message.posted' AND correlation_id = $1`, corr).Scan(&postedID))
	require.NoError(t, a.db.Pool.QueryRow(ctx, `SELECT causation_id, correlation_id FROM events WHERE type = 'message.replied'
		AND causation_id = $1`, postedID).Scan(&repliedCause, &repliedCorr))
	assert.Equal(t, corr, repliedCorr)

	// The API, the relay and the projectors each logged it.
	var api, relay bool
	projectors := map[string]bool{}
	testenv.Eventually(t, 10*time.Second, func() error {
		for line := range strings.SplitSeq(a.logs(), "\n") {
			if !strings.Contains(line, corr) {
				continue
			}
			var l struct {
				Msg, Projector, Component, Consumer string
				CorrelationID                       string `json:"correlation_id"`
			}
			if json.Unmarshal([]byte(line), &l) != nil || l.CorrelationID != corr {
				continue
			}
			switch {
			case l.Msg == "http request":
				api = true
			case l.Component == "relay":
				relay = true
			case l.Projector != "":
				projectors[l.Projector] = true
			}
		}
		if !api || !relay || len(projectors) < 4 {
			return fmt.Errorf("api %v, relay %v, projectors %v", api, relay, projectors)
		}
		return nil
	})
	for _, p := range []string{"conversations", "responder", "audit", "analytics"} {
		assert.True(t, projectors[p], "the %s projector logged the correlation id", p)
	}

	// A worker after a projector: the welcome email of a user made with a correlation id
	// is logged by the mailer with it.
	userCorr := "trace-" + uuid.NewString()
	a.createUser(owner, "Una", "una@traced.example", "member", map[string]string{"X-Correlation-ID": userCorr})
	testenv.Eventually(t, 10*time.Second, func() error {
		for line := range strings.SplitSeq(a.logs(), "\n") {
			if strings.Contains(line, `"component":"mailer"`) && strings.Contains(line, `"correlation_id":"`+userCorr+`"`) {
				return nil
			}
		}
		return fmt.Errorf("the mailer has not logged %s", userCorr)
	})

	// The audit trail finds every entry of the request by its correlation id: the message
	// and the bot's reply.
	var entries []struct {
		Action        string
		CorrelationID string `json:"correlation_id"`
		CausationID   string `json:"causation_id"`
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		entries = nil
		a.expect(req{method: "GET", path: "/api/v1/audit-logs?correlation_id=" + corr, token: owner}, 200).data(t, &entries)
		if len(entries) < 2 {
			return fmt.Errorf("%d entries", len(entries))
		}
		return nil
	})
	actions := map[string]string{}
	for _, e := range entries {
		assert.Equal(t, corr, e.CorrelationID)
		actions[e.Action] = e.CausationID
	}
	assert.Contains(t, actions, "message.posted")
	assert.Equal(t, postedID, actions["message.replied"])
}

func TestProjectionStatusDeadLettersAndRedrive(t *testing.T) {
	a := startApp(t)
	_, owner := a.register("Poisoned Co", "Pia", "pia@poisoned.example")
	_, op := a.operator("ops@platform.example")
	a.expectError(req{method: "GET", path: "/api/v1/admin/projections", token: owner}, 403, "FORBIDDEN")

	// A defect in the chatbots projection (here: a constraint its writes break) makes it
	// dead-letter an event.
	ctx := context.Background()
	_, err := a.db.Pool.Exec(ctx, `ALTER TABLE chatbots ADD CONSTRAINT no_poison CHECK (name <> 'Poison')`)
	require.NoError(t, err)
	var bot struct{ ID string }
	a.expect(req{method: "POST", path: "/api/v1/chatbots", token: owner, body: map[string]any{"name": "Poison"}}, 201).data(t, &bot)

	type status struct {
		Relay struct {
			Position int64 `json:"position"`
			Behind   int64 `json:"events_behind"`
		}
		Projections []struct {
			Name          string
			Position      *int64
			EventsApplied int64 `json:"events_applied"`
			Queued        *int
			DeadLettered  *int `json:"dead_lettered"`
			Consumers     *int
			LagSeconds    *float64 `json:"lag_seconds"`
		}
	}
	find := func(s status, name string) (int, int) {
		for _, p := range s.Projections {
			if p.Name == name && p.DeadLettered != nil && p.Queued != nil {
				return *p.DeadLettered, *p.Queued
			}
		}
		return -1, -1
	}
	testenv.Eventually(t, 15*time.Second, func() error {
		time.Sleep(100 * time.Millisecond)
		var s status
		a.expect(req{method: "GET", path: "/api/v1/admin/projections", token: op}, 200).data(t, &s)
		if dead, _ := find(s, "chatbots"); dead != 1 {
			return fmt.Errorf("chatbots dead letters: %d", dead)
		}
		return nil
	})
	var s status
	a.expect(req{method: "GET", path: "/api/v1/admin/projections", token: op}, 200).data(t, &s)
	assert.Positive(t, s.Relay.Position)
	assert.Len(t, s.Projections, 11, "nine projectors, the webhook responder and the projectors' shared queue")
	shared, _ := find(s, "projections")
	assert.Zero(t, shared, "the poison is the chatbots projection's dead letter, not the shared queue's")
	for _, p := range s.Projections {
		require.NotNil(t, p.Consumers, p.Name)
		assert.Positive(t, *p.Consumers, p.Name)
		if p.Name == "audit" {
			require.NotNil(t, p.Position)
			assert.Equal(t, s.Relay.Position, *p.Position, "the audit projection applies every event")
		}
	}
	// The CLI shows the same.
	out, err := a.cli("", "projections", "status")
	require.NoError(t, err)
	assert.Regexp(t, `(?m)^chatbots\s+`, out)
	out, err = a.cli("", "projections", "status", "--json")
	require.NoError(t, err)
	var cliStatus status
	require.NoError(t, json.Unmarshal([]byte(out), &cliStatus))
	dead, _ := find(cliStatus, "chatbots")
	assert.Equal(t, 1, dead)

	// The dead letter is listed (and stays), over HTTP and by the CLI.
	var letters []struct {
		EventID, Type, Reason string
		StreamID              string `json:"stream_id"`
	}
	a.expect(req{method: "GET", path: "/api/v1/admin/projections/chatbots/dead-letters", token: op}, 200).data(t, &letters)
	require.Len(t, letters, 1)
	assert.Equal(t, "chatbot.created", letters[0].Type)
	assert.Equal(t, bot.ID, letters[0].StreamID)
	assert.Equal(t, "rejected", letters[0].Reason)
	out, err = a.cli("", "projections", "dead-letters", "chatbots")
	require.NoError(t, err)
	assert.Contains(t, out, bot.ID)
	a.expectError(req{method: "GET", path: "/api/v1/admin/projections/nope/dead-letters", token: op}, 404, "NOT_FOUND")
	a.expectError(req{method: "GET", path: "/api/v1/admin/projections/chatbots/dead-letters?limit=0", token: op}, 422, "VALIDATION_ERROR")
	a.expectError(req{method: "GET", path: "/api/v1/chatbots/" + bot.ID, token: owner}, 404, "NOT_FOUND")

	// Fixed, redriven: the chatbot appears, and nothing is left dead.
	a.fixAndRedrive(op, owner, bot.ID)
	a.expect(req{method: "GET", path: "/api/v1/admin/projections", token: op}, 200).data(t, &s)
	dead, _ = find(s, "chatbots")
	assert.Equal(t, 0, dead)
	out, err = a.cli("", "projections", "redrive", "chatbots")
	require.NoError(t, err)
	assert.Contains(t, out, "0 dead-lettered events")

	// The broker down: the status still answers from the database, with the broker's
	// figures unknown; dead letters cannot be read and say so with 503.
	a.amqp.Cut()
	var down status
	a.expect(req{method: "GET", path: "/api/v1/admin/projections", token: op}, 200).data(t, &down)
	require.NotEmpty(t, down.Projections)
	for _, p := range down.Projections {
		assert.Nil(t, p.Queued, p.Name)
		assert.Nil(t, p.DeadLettered, p.Name)
	}
	a.expectError(req{method: "GET", path: "/api/v1/admin/projections/chatbots/dead-letters", token: op}, 503, "SERVICE_UNAVAILABLE")
	a.amqp.Restore()
}

// With PROJECTOR_PARTITIONS, the whole binary reads its writes through partitioned
// projectors, shows the layout in the status, dead-letters a partition's poison into the
// projector's one dead-letter queue, and redrives it into its organization's partition.
func TestPartitionedProjectorsServeAndRedrive(t *testing.T) {
	a := startApp(t, "PROJECTOR_PARTITIONS=3")
	ctx := context.Background()
	_, op := a.operator("ops@platform.example")
	owners := make([]string, 4)
	for i := range owners {
		_, owners[i] = a.register(fmt.Sprintf("Tenant %d", i), "Owner", fmt.Sprintf("owner%d@tenant.example", i))
	}
	// Read-your-writes through every tenant's partition.
	for i, owner := range owners {
		created := a.expect(req{method: "POST", path: "/api/v1/chatbots", token: owner, body: map[string]any{"name": fmt.Sprintf("Bot %d", i)}}, 201)
		var bot struct{ ID string }
		created.data(t, &bot)
		a.expect(req{method: "GET", path: "/api/v1/chatbots/" + bot.ID, token: owner, headers: consistent(created)}, 200)
	}

	type projection struct {
		Name         string
		Partitions   int
		Consumers    *int
		DeadLettered *int `json:"dead_lettered"`
	}
	status := func() map[string]projection {
		var s struct{ Projections []projection }
		a.expect(req{method: "GET", path: "/api/v1/admin/projections", token: op}, 200).data(t, &s)
		out := map[string]projection{}
		for _, p := range s.Projections {
			out[p.Name] = p
		}
		return out
	}
	st := status()
	assert.Equal(t, 3, st["chatbots"].Partitions)
	assert.Equal(t, 1, st["responder"].Partitions, "competing consumers are not partitioned")
	require.NotNil(t, st["chatbots"].Consumers)
	assert.Equal(t, 3, *st["chatbots"].Consumers, "one consumer per partition")
	var layouts []string
	require.NoError(t, a.db.Pool.QueryRow(ctx, `SELECT array_agg(projection ORDER BY projection) FROM projection_layouts
		WHERE partitions = 3 AND draining IS NULL`).Scan(&layouts))
	assert.Equal(t, []string{"projections", "trainer"}, layouts, "the projectors' one queue and the trainer's: not the responder's")

	_, err := a.db.Pool.Exec(ctx, `ALTER TABLE chatbots ADD CONSTRAINT no_poison CHECK (name <> 'Poison')`)
	require.NoError(t, err)
	var bot struct{ ID string }
	a.expect(req{method: "POST", path: "/api/v1/chatbots", token: owners[2], body: map[string]any{"name": "Poison"}}, 201).data(t, &bot)
	testenv.Eventually(t, 20*time.Second, func() error {
		time.Sleep(50 * time.Millisecond)
		if p := status()["chatbots"]; p.DeadLettered == nil || *p.DeadLettered != 1 {
			return fmt.Errorf("chatbots dead letters: %v", p.DeadLettered)
		}
		return nil
	})
	a.fixAndRedrive(op, owners[2], bot.ID)
	assert.Zero(t, *status()["chatbots"].DeadLettered)
}

// fixAndRedrive drops the constraint that poisoned the chatbots projection, redrives its
// one dead letter and waits until the chatbot reads back.
func (a *app) fixAndRedrive(operator, owner, bot string) {
	a.t.Helper()
	_, err := a.db.Pool.Exec(context.Background(), `ALTER TABLE chatbots DROP CONSTRAINT no_poison`)
	require.NoError(a.t, err)
	var moved struct{ Redriven int }
	a.expect(req{method: "POST", path: "/api/v1/admin/projections/chatbots/redrive", token: operator}, 200).data(a.t, &moved)
	assert.Equal(a.t, 1, moved.Redriven)
	testenv.Eventually(a.t, 10*time.Second, func() error {
		time.Sleep(50 * time.Millisecond)
		if r := a.do(req{method: "GET", path: "/api/v1/chatbots/" + bot, token: owner}); r.Status != 200 {
			return fmt.Errorf("chatbot: %d", r.Status)
		}
		return nil
	})
}
