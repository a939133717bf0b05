package config

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDefaultsPointAtLocalServices(t *testing.T) {
	c, err := Load(nil)
	require.NoError(t, err)
	assert.Equal(t, ":8080", c.HTTPAddr)
	assert.Equal(t, c.DatabaseURL, c.DatabaseReadURL)
	assert.Equal(t, "chatbot.events", c.AMQPExchange)
}

func TestEveryBadValueIsReported(t *testing.T) {
	_, err := Load([]string{"DATABASE_URL=mysql://x", "REDIS_URL=http://x", "JWT_SIGNING_KEYS=short", "TRUSTED_PROXIES=not-an-ip", "LOG_LEVEL=loud"})
	require.Error(t, err)
	for _, name := range []string{"DATABASE_URL", "REDIS_URL", "JWT_SIGNING_KEYS", "TRUSTED_PROXIES", "LOG_LEVEL"} {
		assert.Contains(t, err.Error(), name)
	}
	_, err = Load([]string{"HTTP_READ_TIMEOUT=soon"})
	assert.ErrorContains(t, err, "HTTP_READ_TIMEOUT")
}
