package apidoc_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/apidoc"
)

func TestDocumentIsValidOpenAPI(t *testing.T) {
	_, err := apidoc.Load()
	require.NoError(t, err)
}
