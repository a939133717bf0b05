package secretbox

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSealOpen(t *testing.T) {
	b, err := New(bytes.Repeat([]byte{7}, 32))
	require.NoError(t, err)
	sealed := b.Seal([]byte("webhook secret"), []byte("bot-1"))
	assert.NotContains(t, string(sealed), "webhook secret")
	got, err := b.Open(sealed, []byte("bot-1"))
	require.NoError(t, err)
	assert.Equal(t, "webhook secret", string(got))
	_, err = b.Open(sealed, []byte("bot-2"))
	assert.Error(t, err, "a ciphertext moved to another row does not open")
	other, _ := New(bytes.Repeat([]byte{8}, 32))
	_, err = other.Open(sealed, []byte("bot-1"))
	assert.Error(t, err)
	_, err = New([]byte("short"))
	assert.Error(t, err)
}
