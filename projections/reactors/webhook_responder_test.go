package reactors_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/netguard"
	"github.com/chatbotsaas/chatbotd/projections/reactors"
)

func responder(timeout time.Duration, allowPrivate bool) reactors.WebhookResponder {
	return reactors.WebhookResponder{Client: reactors.WebhookClient(netguard.Guard{AllowPrivate: allowPrivate}, timeout),
		Attempts: 3, Backoff: 10 * time.Millisecond}
}

func TestWebhookCall(t *testing.T) {
	secret := []byte("shared-secret-0123456789")
	body := []byte(`{"content":"hi"}`)
	var calls atomic.Int32
	handlers := map[string]http.HandlerFunc{
		"/ok": func(w http.ResponseWriter, r *http.Request) {
			got, _ := io.ReadAll(r.Body)
			// The receiver can check the signature with the shared secret.
			if r.Header.Get("X-Signature") != reactors.Sign(secret, got) {
				http.Error(w, "bad signature", http.StatusUnauthorized)
				return
			}
			_ = json.NewEncoder(w).Encode(map[string]string{"reply": "hello back"})
		},
		"/slow": func(w http.ResponseWriter, r *http.Request) { time.Sleep(300 * time.Millisecond) },
		"/flaky": func(w http.ResponseWriter, r *http.Request) {
			if calls.Add(1) == 1 {
				http.Error(w, "boom", http.StatusInternalServerError)
				return
			}
			_, _ = w.Write([]byte(`{"reply":"second time lucky"}`))
		},
		"/down":     func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusServiceUnavailable) },
		"/redirect": func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ok", http.StatusFound) },
		"/huge": func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`{"reply":"` + strings.Repeat("x", 70<<10) + `"}`))
		},
		"/notjson": func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(`<html>`)) },
	}
	mux := http.NewServeMux()
	for p, h := range handlers {
		mux.HandleFunc(p, h)
	}
	srv := httptest.NewServer(mux)
	defer srv.Close()
	ctx := context.Background()
	r := responder(150*time.Millisecond, true)

	reply, reason := r.Call(ctx, srv.URL+"/ok", secret, body)
	assert.Equal(t, "hello back", reply)
	assert.Empty(t, reason)
	_, reason = r.Call(ctx, srv.URL+"/ok", []byte("the wrong secret"), body)
	assert.Contains(t, reason, "status 401", "a receiver detects a bad signature")

	_, reason = r.Call(ctx, srv.URL+"/slow", secret, body)
	assert.Contains(t, reason, "timed out")

	reply, reason = r.Call(ctx, srv.URL+"/flaky", secret, body)
	assert.Equal(t, "second time lucky", reply, reason)
	assert.EqualValues(t, 2, calls.Load())

	_, reason = r.Call(ctx, srv.URL+"/down", secret, body)
	assert.Contains(t, reason, "status 503")

	_, reason = r.Call(ctx, srv.URL+"/redirect", secret, body)
	assert.Contains(t, reason, "redirects are refused")

	_, reason = r.Call(ctx, srv.URL+"/huge", secret, body)
	assert.Contains(t, reason, "larger than 64 KiB")

	_, reason = r.Call(ctx, srv.URL+"/notjson", secret, body)
	assert.Contains(t, reason, `"reply"`)

	// Without the development switch, a loopback target is refused when dialling, even
	// though the URL passed validation elsewhere (DNS rebinding).
	_, reason = responder(time.Second, false).Call(ctx, srv.URL+"/ok", secret, body)
	assert.Contains(t, reason, "not public")
}

// A workflow's answer is taken in each form n8n's "Respond to Webhook" sends, from any
// 2xx; an answer that another call would not change (a 4xx other than 408 and 429, or a
// 2xx without a reply) is not asked again, since each call runs the workflow.
func TestWebhookAnswersInEveryFormAndRetriesOnlyWhatCanSucceed(t *testing.T) {
	cases := []struct {
		name        string
		status      int
		contentType string
		body        string
		reply       string // "" when it fails
		calls       int32
	}{
		{"object", 200, "application/json", `{"reply":"hi"}`, "hi", 1},
		{"created", 201, "application/json", `{"reply":"made"}`, "made", 1},
		{"all incoming items", 200, "application/json", `[{"reply":"first"},{"reply":"second"}]`, "first", 1},
		{"items, the first without a reply", 200, "application/json", `[{"other":1},{"reply":"second"}]`, "second", 1},
		{"plain text", 200, "text/plain; charset=utf-8", "  Hello <b>&</b> you\n", "Hello <b>&</b> you", 1},
		{"accepted, json without its header", 202, "", `{"reply":"sniffed"}`, "sniffed", 1},
		{"no content", 204, "", "", "", 1},
		{"json without a reply", 200, "application/json", `{"answer":"x"}`, "", 1},
		{"html", 200, "text/html", "<p>hi</p>", "", 1},
		{"bad request", 400, "application/json", `{"error":"no"}`, "", 1},
		{"not found", 404, "text/plain", "gone", "", 1},
		{"request timeout", 408, "", "", "", 3},
		{"too many requests", 429, "", "", "", 3},
		{"server error", 502, "", "", "", 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				if c.contentType != "" {
					w.Header().Set("Content-Type", c.contentType)
				}
				w.WriteHeader(c.status)
				_, _ = w.Write([]byte(c.body))
			}))
			defer srv.Close()
			reply, reason := responder(time.Second, true).Call(context.Background(), srv.URL, []byte("secret-0123456789abcdef"), []byte(`{}`))
			assert.Equal(t, c.reply, reply, reason)
			if c.reply == "" {
				assert.NotEmpty(t, reason)
			}
			assert.Equal(t, c.calls, calls.Load(), "calls")
		})
	}
}

// What a workflow receives is the message as typed ("&", "<", ">" unescaped, so that the
// JSON.stringify of the parsed body is the signed bytes), signed twice: X-Signature over
// the body, and X-Webhook-Signature over "<timestamp>.<body>" with X-Webhook-Timestamp.
func TestWebhookRequestIsUnescapedAndSignedWithATimestamp(t *testing.T) {
	secret := []byte("shared-secret-0123456789")
	body, err := reactors.RequestBody(reactors.WebhookRequest{ChatbotID: "b", ConversationID: "c", MessageID: "m",
		Content: "Tom & Jerry <3 > all"})
	require.NoError(t, err)
	assert.Contains(t, string(body), `"content":"Tom & Jerry <3 > all"`)
	var got http.Header
	var gotBody []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, gotBody = r.Header.Clone(), must(io.ReadAll(r.Body))
		_, _ = w.Write([]byte(`{"reply":"ok"}`))
	}))
	defer srv.Close()
	before := time.Now().Unix()
	_, reason := responder(time.Second, true).Call(context.Background(), srv.URL, secret, body)
	require.Empty(t, reason)
	assert.Equal(t, body, gotBody)
	assert.Equal(t, reactors.Sign(secret, body), got.Get("X-Signature"))
	ts, err := strconv.ParseInt(got.Get("X-Webhook-Timestamp"), 10, 64)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, ts, before)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(got.Get("X-Webhook-Timestamp") + "."))
	m.Write(body)
	assert.Equal(t, "t="+got.Get("X-Webhook-Timestamp")+",v1="+hex.EncodeToString(m.Sum(nil)), got.Get("X-Webhook-Signature"))
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
