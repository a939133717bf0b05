package reactors_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/projections/reactors"
)

// The n8n workflow shipped with the repository (n8n-webhook-responder.json) verifies
// what the webhook responder sends, with stock nodes only: run by Node.js the way n8n
// evaluates it (testdata/n8n-run.js), it answers a genuine call, and refuses a changed
// body, a wrong secret and an old timestamp. Its HMAC is over JSON.stringify of the parsed
// body, so this also checks that the responder's JSON is what JavaScript writes back.
func TestTheN8nWorkflowVerifiesTheResponder(t *testing.T) {
	node, err := exec.LookPath("node")
	require.NoError(t, err, "Node.js runs the n8n workflow's expressions")
	raw, err := os.ReadFile(filepath.Join("..", "..", "n8n-webhook-responder.json"))
	require.NoError(t, err)
	var workflow any
	require.NoError(t, json.Unmarshal(raw, &workflow))

	secret := []byte("whsec_0123456789abcdef")
	// HTML characters, quotes, non-ASCII, line and paragraph separators (which
	// encoding/json escapes and JSON.stringify does not), and a literal "\u2028".
	content := `Tom & Jerry <3 "quotes", café, 日本語, 🚀 \ back\slash` + "\u2028line\u2029para" + ` \u2028 as typed`
	body, err := reactors.RequestBody(reactors.WebhookRequest{ChatbotID: "b0t", ConversationID: "c0nv", MessageID: "m3ss",
		Content: content, Metadata: map[string]any{"channel": "web", "score": 0.75, "tags": []string{"a<b"}, "nested": map[string]any{"z": 1, "a": true}}})
	require.NoError(t, err)

	run := func(secret string, headers map[string][]string, body []byte) (branch bool, status int, reply any) {
		t.Helper()
		lower := map[string]string{} // n8n gives headers by their lower-case names
		for k, v := range headers {
			lower[strings.ToLower(k)] = v[0]
		}
		in, err := json.Marshal(map[string]any{"workflow": workflow, "secret": secret, "headers": lower, "body": string(body)})
		require.NoError(t, err)
		cmd := exec.Command(node, filepath.Join("testdata", "n8n-run.js"))
		cmd.Stdin = bytes.NewReader(in)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		require.NoError(t, err, stderr.String())
		var res struct {
			Branch bool
			Status int
			Reply  any
		}
		require.NoError(t, json.Unmarshal(out, &res), string(out))
		return res.Branch, res.Status, res.Reply
	}

	now := time.Now()
	ok, status, reply := run(string(secret), reactors.WebhookHeaders(secret, body, now), body)
	assert.True(t, ok, "a genuine call is verified")
	assert.Equal(t, 200, status)
	assert.Equal(t, map[string]any{"reply": "You asked: " + content}, reply)

	changed := bytes.Replace(body, []byte("Jerry"), []byte("Terry"), 1)
	ok, status, _ = run(string(secret), reactors.WebhookHeaders(secret, body, now), changed)
	assert.False(t, ok, "a changed body is refused")
	assert.Equal(t, 401, status)

	ok, _, _ = run("another secret", reactors.WebhookHeaders(secret, body, now), body)
	assert.False(t, ok, "another secret is refused")

	old := now.Add(-10 * time.Minute)
	ok, _, _ = run(string(secret), reactors.WebhookHeaders(secret, body, old), body)
	assert.False(t, ok, "a call older than 5 minutes is refused (timestamp %s)", strconv.FormatInt(old.Unix(), 10))
}
