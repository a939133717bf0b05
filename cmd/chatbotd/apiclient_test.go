package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	// The client generated below imports it: kept a requirement of the module.
	_ "github.com/oapi-codegen/runtime"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A client generated from the OpenAPI document by oapi-codegen (a tool of the module: `go
// tool oapi-codegen`), as an outside team would make one, compiles and drives the README's
// quick start end to end: register, log in, a chatbot with a knowledge entry, training,
// publishing, a conversation, a question, and the knowledge base's reply. The generated
// code is made for the test and thrown away: it is not kept in the repository.
func TestAGeneratedClientDrivesTheChatbotFlow(t *testing.T) {
	a := startApp(t)
	dir, err := os.MkdirTemp("testdata", "apiclient-run-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	gen := exec.Command("go", "tool", "oapi-codegen", "-package", "main", "-generate", "types,client",
		"-o", filepath.Join(dir, "client.gen.go"), filepath.Join("..", "..", "internal", "apidoc", "openapi.yaml"))
	out, err := gen.CombinedOutput()
	require.NoError(t, err, "oapi-codegen: %s", out)
	flow, err := os.ReadFile(filepath.Join("testdata", "apiclient", "flow.go.txt"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "main.go"), flow, 0o644))

	run := exec.Command("go", "run", "./"+filepath.ToSlash(dir), "-base", a.base)
	out, err = run.CombinedOutput()
	require.NoError(t, err, "the generated client's flow: %s", out)
	assert.Contains(t, string(out), "bot: 9:00 to 17:00, Monday to Friday.")
}
