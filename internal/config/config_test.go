package config

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDefaultsPointAtLocalServices(t *testing.T) {
	c, err := Load(nil)
	require.NoError(t, err)
	assert.Equal(t, ":8080", c.HTTPAddr)
	assert.Equal(t, c.DatabaseURL, c.DatabaseReadURL)
	assert.Equal(t, "chatbot.events", c.AMQPExchange)
	// The projectors apply a backlog in larger transactions than the reactors take, whose
	// competing consumers each hold a batch.
	assert.Equal(t, 500, c.ProjectorBatchSize)
	assert.Equal(t, 200, c.ReactorBatchSize)
}

func TestEveryBadValueIsReported(t *testing.T) {
	_, err := Load([]string{"DATABASE_URL=mysql://x", "REDIS_URL=http://x", "JWT_SIGNING_KEYS=short", "TRUSTED_PROXIES=not-an-ip", "LOG_LEVEL=loud",
		"REDIS_LOCAL_CACHE_ENTRIES=-1", "REDIS_LOCAL_CACHE_MAX_STALENESS=1ms", "PROJECTOR_SWEEP_INTERVAL=-1s",
		"GIN_MERGE_INTERVAL=-1s", "PROJECTOR_BATCH_SIZE=0", "REACTOR_BATCH_SIZE=5001"})
	require.Error(t, err)
	for _, name := range []string{"DATABASE_URL", "REDIS_URL", "JWT_SIGNING_KEYS", "TRUSTED_PROXIES", "LOG_LEVEL",
		"REDIS_LOCAL_CACHE_ENTRIES", "REDIS_LOCAL_CACHE_MAX_STALENESS", "PROJECTOR_SWEEP_INTERVAL", "GIN_MERGE_INTERVAL",
		"PROJECTOR_BATCH_SIZE", "REACTOR_BATCH_SIZE"} {
		assert.Contains(t, err.Error(), name)
	}
	_, err = Load([]string{"HTTP_READ_TIMEOUT=soon"})
	assert.ErrorContains(t, err, "HTTP_READ_TIMEOUT")
	c, err := Load([]string{"PROJECTOR_SWEEP_INTERVAL=0"})
	require.NoError(t, err, "0 turns the sweep off")
	assert.Zero(t, c.ProjectorSweepInterval)
	c, err = Load([]string{"GIN_MERGE_INTERVAL=0"})
	require.NoError(t, err, "0 leaves the pending lists to PostgreSQL")
	assert.Zero(t, c.GINMergeInterval)
	c, err = Load(nil)
	require.NoError(t, err)
	assert.Equal(t, time.Second, c.GINMergeInterval)
}

func TestProductionNeedsEveryKey(t *testing.T) {
	_, err := Load([]string{"APP_ENV=production"})
	require.Error(t, err)
	for _, name := range []string{"JWT_SIGNING_KEYS", "SECRETS_KEY", "AUDIT_SIGNING_KEY"} {
		assert.Contains(t, err.Error(), name+" must be set when APP_ENV=production")
	}
	key := "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" // 32 bytes
	_, err = Load([]string{"APP_ENV=production", "JWT_SIGNING_KEYS=" + key, "SECRETS_KEY=" + key})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "AUDIT_SIGNING_KEY")
	assert.NotContains(t, err.Error(), "SECRETS_KEY")
	_, err = Load([]string{"APP_ENV=production", "JWT_SIGNING_KEYS=" + key, "SECRETS_KEY=" + key, "AUDIT_SIGNING_KEY=" + key})
	require.NoError(t, err)
	c, err := Load(nil)
	require.NoError(t, err)
	assert.Equal(t, Development, c.AppEnv, "make run needs no keys")
	_, err = Load([]string{"APP_ENV=staging"})
	assert.ErrorContains(t, err, "APP_ENV")
}

// AMQP_URL takes a cluster's nodes as a comma-separated list; each must be an AMQP URL.
func TestAMQPURLListsNodes(t *testing.T) {
	c, err := Load([]string{"AMQP_URL=amqp://u:p@rabbit-1:5672/, amqp://u:p@rabbit-2:5672/,amqps://u:p@rabbit-3:5671/"})
	require.NoError(t, err)
	assert.Contains(t, c.AMQPURL, "rabbit-3")
	for _, bad := range []string{"amqp://rabbit-1:5672/,http://rabbit-2", ",", "amqp://"} {
		_, err := Load([]string{"AMQP_URL=" + bad})
		assert.ErrorContains(t, err, "AMQP_URL", bad)
	}
}
