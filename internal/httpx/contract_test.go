package httpx

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/apperr"
)

// The contract in the repository (API.md) and the server agree on every error code: each
// code its tables name answers with their status, and the server answers no code they
// do not name.
func TestAPIContractErrorCodes(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "API.md"))
	require.NoError(t, err)
	named := map[apperr.Code]int{}
	for _, m := range regexp.MustCompile(`(?m)^\| ([A-Z_]+) \| (\d{3}) \|`).FindAllSubmatch(raw, -1) {
		status, _ := strconv.Atoi(string(m[2]))
		named[apperr.Code(m[1])] = status
	}
	require.NotEmpty(t, named)
	for code, status := range named {
		assert.Equal(t, status, statusOf[code], "API.md: %s is %d", code, status)
	}
	for code := range statusOf {
		assert.Contains(t, named, code, "the server answers %s, which API.md does not name", code)
	}
}
