package reactors_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

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
