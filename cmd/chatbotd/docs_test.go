package main

import (
	"context"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/apidoc"
)

// chromium finds Debian's chromium (installed by .ci/services).
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium on PATH: install Debian's chromium package (make services does)")
	return ""
}

// TestDocsPageRendersEveryEndpointOffline loads /docs in headless Chromium, waits for
// Swagger UI to render the OpenAPI document, and finds every documented operation on the
// page; every request the page makes goes to chatbotd itself.
func TestDocsPageRendersEveryEndpointOffline(t *testing.T) {
	a := startApp(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox, chromedp.DisableGPU, chromedp.Flag("headless", "new"))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(allocCtx)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 60*time.Second)
	defer cancelTimeout()

	var mu sync.Mutex
	var requested []string
	require.NoError(t, chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok {
			mu.Lock()
			requested = append(requested, e.Request.URL)
			mu.Unlock()
		}
	}))

	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(a.base+"/docs"), chromedp.WaitVisible(`.opblock`)))
	title, err := chromedp.Run(ctx, chromedp.Title())
	require.NoError(t, err)
	paths, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('.opblock')).map(b =>
		b.querySelector('.opblock-summary-method').textContent.trim() + ' ' +
		b.querySelector('.opblock-summary-path').getAttribute('data-path'))`))
	require.NoError(t, err)
	assert.Equal(t, "chatbotd API", title)

	doc, err := apidoc.Load()
	require.NoError(t, err)
	var want []string
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			want = append(want, method+" "+path)
		}
	}
	assert.ElementsMatch(t, want, paths, "every documented operation is on the page")
	assert.Contains(t, paths, "GET /api/v1/users/{id}")
	assert.Contains(t, paths, "POST /api/v1/admin/organizations/{id}/suspend")

	base, err := url.Parse(a.base)
	require.NoError(t, err)
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, requested)
	for _, r := range requested {
		u, err := url.Parse(r)
		require.NoError(t, err)
		if u.Scheme == "data" || strings.HasPrefix(r, "data:") {
			continue
		}
		assert.Equal(t, base.Host, u.Host, "the page fetched %s", r)
	}
}
