package main

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// An API process of its own (serve --roles api) beside the app, on the same database,
// Redis and broker: it keeps a copy of each cache entry it reads (REDIS_LOCAL_CACHE_ENTRIES),
// here for up to an hour, so only Redis's invalidation can tell it that the app's
// projector wrote a newer one. A user renamed through the app must read renamed through
// it, without a consistency token, within a second.
func TestAnotherProcessesCopyOfACachedUserFollowsItsChange(t *testing.T) {
	a := startApp(t)
	env := append(append([]string{}, a.env...), "REDIS_LOCAL_CACHE_MAX_STALENESS=1h")
	base, stop, done := serve(t, &Main{Stdout: &syncWriter{}, Stderr: &syncWriter{}, Environ: env}, "serve", "--roles", "api")
	t.Cleanup(func() { stop(); <-done })
	api := &app{t: t, base: base, client: &http.Client{Timeout: 15 * time.Second}}

	owner, token := a.register("Copies", "Owner", "owner@copies.example")
	read := func(d *app, headers map[string]string) userJSON {
		var u userJSON
		d.expect(req{method: "GET", path: "/api/v1/users/" + owner.ID, token: token, headers: headers}, 200).data(t, &u)
		return u
	}
	for start := time.Now(); api.do(req{method: "GET", path: "/api/v1/users/" + owner.ID, token: token}).Status != 200; {
		require.Less(t, time.Since(start), 5*time.Second, "the owner never became readable")
		time.Sleep(10 * time.Millisecond)
	}
	for range 5 { // read again: from the api process's copy
		require.Equal(t, "Owner", read(api, nil).Name)
	}

	res := a.expect(req{method: "PATCH", path: "/api/v1/users/" + owner.ID, token: token, body: map[string]string{"name": "Renamed"}}, 200)
	require.Equal(t, "Renamed", read(a, consistent(res)).Name)
	start := time.Now()
	for read(api, nil).Name != "Renamed" {
		require.Less(t, time.Since(start), 2*time.Second, "the api process still answers the old name")
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("the api process read the new name %s after the app did", time.Since(start).Round(time.Millisecond))
	assert.Equal(t, "Renamed", read(api, consistent(res)).Name)
}
