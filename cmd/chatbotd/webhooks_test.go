package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// receiver is a webhook endpoint: status decides each answer (by the request's number,
// from 1); every request is kept.
type receiver struct {
	srv    *httptest.Server
	status func(n int) int
	mu     sync.Mutex
	all    []received
}

type received struct {
	header http.Header
	body   []byte
	env    struct {
		ID             string         `json:"id"`
		Type           string         `json:"type"`
		StreamID       string         `json:"stream_id"`
		StreamVersion  int            `json:"stream_version"`
		OrganizationID string         `json:"organization_id"`
		Data           map[string]any `json:"data"`
	}
	status int
}

func newReceiver(t *testing.T, status func(n int) int) *receiver {
	r := &receiver{status: status}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		rec := received{header: req.Header.Clone(), body: body}
		_ = json.Unmarshal(body, &rec.env)
		r.mu.Lock()
		rec.status = r.status(len(r.all) + 1)
		r.all = append(r.all, rec)
		r.mu.Unlock()
		w.WriteHeader(rec.status)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) requests() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.all...)
}

// delivered is what was accepted (2xx), once per event id, in order of arrival.
func (r *receiver) delivered() []received {
	var out []received
	seen := map[string]bool{}
	for _, x := range r.requests() {
		if x.status < 300 && !seen[x.env.ID] {
			seen[x.env.ID] = true
			out = append(out, x)
		}
	}
	return out
}

type webhookJSON struct {
	ID                  string   `json:"id"`
	URL                 string   `json:"url"`
	Events              []string `json:"events"`
	Status              string   `json:"status"`
	Secret              string   `json:"secret"`
	DisabledReason      *string  `json:"disabled_reason"`
	ConsecutiveFailures int      `json:"consecutive_failures"`
}

type deliveryJSON struct {
	ID            string `json:"id"`
	EventType     string `json:"event_type"`
	Status        string `json:"status"`
	AttemptCount  int    `json:"attempt_count"`
	StreamVersion int    `json:"stream_version"`
	Attempts      []struct {
		Attempt    int     `json:"attempt"`
		StatusCode *int    `json:"status_code"`
		Error      *string `json:"error"`
	} `json:"attempts"`
}

func hmacHex(secret, msg string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(msg))
	return hex.EncodeToString(m.Sum(nil))
}

func TestWebhookDeliveriesSignedRetriedInStreamOrderAndScoped(t *testing.T) {
	a := startApp(t, "ALLOW_PRIVATE_TARGETS=true", "WEBHOOK_RETRY_BASE=50ms", "WEBHOOK_RETRY_MAX=200ms")
	owner, token := a.register("Hooked", "Hana", "hana@hooked.example")
	_, otherToken := a.register("Elsewhere", "Oz", "oz@elsewhere.example")

	// users: the first three requests fail, the rest succeed.
	users := newReceiver(t, func(n int) int {
		if n <= 3 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	convs := newReceiver(t, func(int) int { return http.StatusNoContent })
	theirs := newReceiver(t, func(int) int { return http.StatusOK })
	const secret = "a-secret-of-the-customer's-own"
	var usersHook, convsHook webhookJSON
	res := a.expect(req{method: "POST", path: "/api/v1/webhooks", token: token,
		body: map[string]any{"url": users.srv.URL + "/hooks", "events": []string{"user.*"}, "secret": secret}}, 201)
	res.data(t, &usersHook)
	assert.Empty(t, usersHook.Secret, "a secret the customer chose is not echoed")
	assert.Equal(t, "active", usersHook.Status)
	a.expect(req{method: "POST", path: "/api/v1/webhooks", token: token,
		body: map[string]any{"url": convs.srv.URL, "events": []string{"conversation.*"}}}, 201).data(t, &convsHook)
	require.True(t, strings.HasPrefix(convsHook.Secret, "whsec_"), "a generated secret is shown once")
	a.expect(req{method: "POST", path: "/api/v1/webhooks", token: otherToken,
		body: map[string]any{"url": theirs.srv.URL, "events": []string{"#"}}}, 201)

	// Two streams of four user events each; another organization's user; a chatbot,
	// a conversation and a message (only the conversation matches a pattern).
	var streams []string
	for i := range 2 {
		u, _ := a.createUser(token, fmt.Sprintf("User %d", i), fmt.Sprintf("u%d@hooked.example", i), "member", nil)
		streams = append(streams, u.ID)
	}
	for v := range 3 {
		for _, id := range streams {
			a.expect(req{method: "PATCH", path: "/api/v1/users/" + id, token: token, body: map[string]string{"name": fmt.Sprintf("Renamed %d", v)}}, 200)
		}
	}
	a.createUser(otherToken, "Not Yours", "nope@elsewhere.example", "member", nil)
	var bot struct{ ID string }
	a.expect(req{method: "POST", path: "/api/v1/chatbots", token: token, body: map[string]any{"name": "Hooky"}}, 201).data(t, &bot)
	a.expect(req{method: "POST", path: "/api/v1/chatbots/" + bot.ID + "/publish", token: token}, 200)
	var conv struct{ ID string }
	a.expect(req{method: "POST", path: "/api/v1/chatbots/" + bot.ID + "/conversations", token: token, body: map[string]any{}}, 201).data(t, &conv)

	testenv.Eventually(t, 20*time.Second, func() error {
		if n := len(users.delivered()); n != 8 {
			return fmt.Errorf("%d of 8 user events delivered", n)
		}
		if n := len(convs.delivered()); n != 1 {
			return fmt.Errorf("%d of 1 conversation events delivered", n)
		}
		return nil
	})

	// Signed with the secret: X-Signature over the body, X-Webhook-Signature over the
	// timestamp and the body; the timestamp is fresh.
	for _, r := range users.requests() {
		assert.Equal(t, "sha256="+hmacHex(secret, string(r.body)), r.header.Get("X-Signature"))
		ts := r.header.Get("X-Webhook-Timestamp")
		sec, err := strconv.ParseInt(ts, 10, 64)
		require.NoError(t, err)
		assert.WithinDuration(t, time.Now(), time.Unix(sec, 0), time.Minute)
		assert.Equal(t, "t="+ts+",v1="+hmacHex(secret, ts+"."+string(r.body)), r.header.Get("X-Webhook-Signature"))
		assert.Equal(t, r.env.ID, r.header.Get("X-Event-ID"))
		assert.Equal(t, r.env.Type, r.header.Get("X-Event-Type"))
		assert.Equal(t, usersHook.ID, r.header.Get("X-Webhook-ID"))
		_, err = uuid.Parse(r.header.Get("X-Delivery-ID"))
		assert.NoError(t, err, "X-Delivery-ID")
		attempt, err := strconv.Atoi(r.header.Get("X-Delivery-Attempt"))
		assert.NoError(t, err, "X-Delivery-Attempt")
		assert.Positive(t, attempt)
		assert.NotEqual(t, "sha256="+hmacHex("another secret", string(r.body)), r.header.Get("X-Signature"))
	}
	for _, r := range convs.requests() {
		assert.Equal(t, "sha256="+hmacHex(convsHook.Secret, string(r.body)), r.header.Get("X-Signature"))
	}

	// Only matching events of the organization; retries made; per stream, no request for
	// a version went out before the previous version was accepted.
	reqs := users.requests()
	assert.Len(t, reqs, 8+3, "three failures, each retried")
	accepted := map[string]int{}
	for _, r := range reqs {
		assert.True(t, strings.HasPrefix(r.env.Type, "user."), r.env.Type)
		assert.Equal(t, owner.OrganizationID, r.env.OrganizationID)
		assert.Equal(t, accepted[r.env.StreamID]+1, r.env.StreamVersion,
			"stream %s: version %d sent after version %d was accepted", r.env.StreamID, r.env.StreamVersion, accepted[r.env.StreamID])
		if r.status < 300 {
			accepted[r.env.StreamID] = r.env.StreamVersion
		}
	}
	assert.Equal(t, map[string]int{streams[0]: 4, streams[1]: 4}, accepted)
	assert.Equal(t, "conversation.started", convs.delivered()[0].env.Type)
	assert.Equal(t, conv.ID, convs.delivered()[0].env.StreamID)
	for _, r := range theirs.requests() {
		assert.NotEqual(t, owner.OrganizationID, r.env.OrganizationID, "another organization's events never reach it")
	}

	// Every attempt is recorded, with its status code.
	var deliveries []deliveryJSON
	a.expect(req{method: "GET", path: "/api/v1/webhooks/" + usersHook.ID + "/deliveries?per_page=50", token: token}, 200).data(t, &deliveries)
	require.Len(t, deliveries, 8)
	attempts, retried := 0, 0
	for _, d := range deliveries {
		assert.Equal(t, "delivered", d.Status)
		require.Len(t, d.Attempts, d.AttemptCount)
		attempts += d.AttemptCount
		if d.AttemptCount > 1 {
			retried++
			require.NotNil(t, d.Attempts[0].StatusCode)
			assert.Equal(t, 500, *d.Attempts[0].StatusCode)
		}
		require.NotNil(t, d.Attempts[d.AttemptCount-1].StatusCode)
		assert.Equal(t, 200, *d.Attempts[d.AttemptCount-1].StatusCode)
	}
	assert.Equal(t, 11, attempts)
	assert.Positive(t, retried)
	var hooks []webhookJSON
	a.expect(req{method: "GET", path: "/api/v1/webhooks", token: token}, 200).data(t, &hooks)
	require.Len(t, hooks, 2)
	for _, h := range hooks {
		assert.Empty(t, h.Secret)
		assert.Zero(t, h.ConsecutiveFailures, "a success resets the count")
	}

	// Another organization sees none of it.
	a.expectError(req{method: "GET", path: "/api/v1/webhooks/" + usersHook.ID, token: otherToken}, 404, "NOT_FOUND")
	a.expectError(req{method: "GET", path: "/api/v1/webhooks/" + usersHook.ID + "/deliveries", token: otherToken}, 404, "NOT_FOUND")
	a.expectError(req{method: "DELETE", path: "/api/v1/webhooks/" + usersHook.ID, token: otherToken}, 404, "NOT_FOUND")

	// Bad input changes nothing.
	for _, body := range []map[string]any{
		{"url": "ftp://example.com", "events": []string{"user.*"}},
		{"url": users.srv.URL, "events": []string{}},
		{"url": users.srv.URL, "events": []string{"user.**"}},
		{"url": users.srv.URL, "events": []string{"User.Created"}},
		{"url": users.srv.URL, "events": []string{"user.*"}, "secret": "short"},
	} {
		a.expectError(req{method: "POST", path: "/api/v1/webhooks", token: token, body: body}, 422, "VALIDATION_ERROR")
	}

	// Deleted: nothing more is delivered. The conversation's event, which comes later in
	// commit order, shows that the user event was dispatched meanwhile.
	a.expect(req{method: "DELETE", path: "/api/v1/webhooks/" + usersHook.ID, token: token}, 200)
	a.createUser(token, "After", "after@hooked.example", "member", nil)
	a.expect(req{method: "POST", path: "/api/v1/chatbots/" + bot.ID + "/conversations", token: token, body: map[string]any{}}, 201)
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := len(convs.delivered()); n != 2 {
			return fmt.Errorf("%d of 2 conversation events delivered", n)
		}
		return nil
	})
	assert.Len(t, users.requests(), 11)
	a.expectError(req{method: "GET", path: "/api/v1/webhooks/" + usersHook.ID, token: token}, 404, "NOT_FOUND")
}

func TestWebhookDisabledAfterTwentyConsecutiveFailures(t *testing.T) {
	a := startApp(t, "ALLOW_PRIVATE_TARGETS=true", "WEBHOOK_RETRY_BASE=20ms", "WEBHOOK_RETRY_MAX=50ms", "WEBHOOK_DELIVERY_ATTEMPTS=100")
	_, token := a.register("Failing", "Fay", "fay@failing.example")
	down := newReceiver(t, func(int) int { return http.StatusServiceUnavailable })
	var hook webhookJSON
	created := a.expect(req{method: "POST", path: "/api/v1/webhooks", token: token,
		body: map[string]any{"url": down.srv.URL, "events": []string{"user.*"}}}, 201)
	created.data(t, &hook)
	for i := range 3 {
		a.createUser(token, fmt.Sprintf("U%d", i), fmt.Sprintf("u%d@failing.example", i), "member", nil)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		var h webhookJSON
		a.expect(req{method: "GET", path: "/api/v1/webhooks/" + hook.ID, token: token, headers: consistent(created)}, 200).data(t, &h)
		if h.Status != "disabled" {
			time.Sleep(100 * time.Millisecond) // within the API's rate limit
			return fmt.Errorf("status %s after %d failures", h.Status, h.ConsecutiveFailures)
		}
		assert.Equal(t, "20 consecutive failed deliveries", *h.DisabledReason)
		return nil
	})
	// At most the attempts already in flight when the twentieth failed come after it.
	n := len(down.requests())
	assert.GreaterOrEqual(t, n, 20)
	assert.LessOrEqual(t, n, 22)
	time.Sleep(300 * time.Millisecond)
	assert.Equal(t, n, len(down.requests()), "nothing is sent to a disabled subscription")

	// The event says so, once.
	lines := ndjsonLines(t, a.expect(req{method: "GET", path: "/api/v1/events?type=webhook.disabled", token: token}, 200).Raw)
	require.Len(t, lines, 1)
	assert.Equal(t, hook.ID, lines[0]["stream_id"])
	data := lines[0]["data"].(map[string]any)
	assert.EqualValues(t, 20, data["consecutive_failures"])
	assert.Equal(t, "status 503", data["last_error"])
	// What was pending is cancelled; every attempt is on record.
	var pending, cancelled []deliveryJSON
	a.expect(req{method: "GET", path: "/api/v1/webhooks/" + hook.ID + "/deliveries?status=pending", token: token}, 200).data(t, &pending)
	assert.Empty(t, pending)
	a.expect(req{method: "GET", path: "/api/v1/webhooks/" + hook.ID + "/deliveries?status=cancelled", token: token}, 200).data(t, &cancelled)
	require.NotEmpty(t, cancelled)
	recorded := 0
	for _, d := range cancelled {
		for _, at := range d.Attempts {
			require.NotNil(t, at.StatusCode)
			assert.Equal(t, 503, *at.StatusCode)
			recorded++
		}
	}
	assert.Equal(t, n, recorded)
}

// The SSRF guard: without ALLOW_PRIVATE_TARGETS, private, loopback and plain-http
// targets are refused when subscribing (and again at connect time, see netguard).
func TestWebhookRefusesPrivateTargets(t *testing.T) {
	a := startApp(t)
	_, token := a.register("Guarded", "Gil", "gil@guarded.example")
	for _, u := range []string{"http://127.0.0.1:8080/hook", "https://127.0.0.1/hook", "https://10.1.2.3/hook",
		"https://169.254.169.254/latest/meta-data", "https://[::1]/hook", "https://user:pw@example.com/hook"} {
		a.expectError(req{method: "POST", path: "/api/v1/webhooks", token: token,
			body: map[string]any{"url": u, "events": []string{"#"}}}, 422, "VALIDATION_ERROR")
	}
	var hooks []webhookJSON
	a.expect(req{method: "GET", path: "/api/v1/webhooks", token: token}, 200).data(t, &hooks)
	assert.Empty(t, hooks)
}
