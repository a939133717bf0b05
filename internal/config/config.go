// Package config reads the process configuration from environment variables once, at
// start, into a struct with defaults that point at the local services.
package config

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"net/mail"
	"net/netip"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/chatbotsaas/chatbotd/internal/broker"
	"github.com/chatbotsaas/chatbotd/internal/cache"
)

// Environments: in production every key must come from the configuration.
const (
	Development = "development"
	Production  = "production"
)

// Config is everything chatbotd can be told from its environment.
type Config struct {
	// AppEnv is development (the default: keys left unset are made once and kept in the
	// database) or production (a key left unset refuses the start, naming it).
	AppEnv          string `env:"APP_ENV" envDefault:"development"`
	DatabaseURL     string `env:"DATABASE_URL" envDefault:"postgres://postgres@127.0.0.1:5432/chatbotd?sslmode=disable"`
	DatabaseReadURL string `env:"DATABASE_READ_URL"` // defaults to DatabaseURL
	DatabaseMaxConn int32  `env:"DATABASE_MAX_CONNS" envDefault:"32"`
	RedisURL        string `env:"REDIS_URL" envDefault:"redis://127.0.0.1:6379/0"`
	RedisPrefix     string `env:"REDIS_PREFIX" envDefault:"chatbotd:"`
	// RedisLocalEntries is how many cache entries a process keeps a copy of, kept fresh
	// by Redis's invalidations (cache.Local); 0 reads Redis every time.
	RedisLocalEntries int `env:"REDIS_LOCAL_CACHE_ENTRIES" envDefault:"10000"`
	// RedisLocalMaxStaleness bounds how long a copy is served without reading Redis.
	RedisLocalMaxStaleness time.Duration `env:"REDIS_LOCAL_CACHE_MAX_STALENESS" envDefault:"1s"`
	// AMQPURL is one node, or a comma-separated list of a cluster's nodes (broker.Dial).
	AMQPURL string `env:"AMQP_URL" envDefault:"amqp://guest:guest@127.0.0.1:5672/"`
	// AMQPExchange is the durable topic exchange every event is published to. It is part
	// of the API contract; it is configurable only so that tests can isolate themselves.
	AMQPExchange    string `env:"AMQP_EXCHANGE" envDefault:"chatbot.events"`
	AMQPQueuePrefix string `env:"AMQP_QUEUE_PREFIX" envDefault:"chatbotd."`

	HTTPAddr          string        `env:"HTTP_ADDR" envDefault:":8080"`
	ReadHeaderTimeout time.Duration `env:"HTTP_READ_HEADER_TIMEOUT" envDefault:"5s"`
	ReadTimeout       time.Duration `env:"HTTP_READ_TIMEOUT" envDefault:"15s"`
	WriteTimeout      time.Duration `env:"HTTP_WRITE_TIMEOUT" envDefault:"30s"`
	IdleTimeout       time.Duration `env:"HTTP_IDLE_TIMEOUT" envDefault:"60s"`
	ShutdownTimeout   time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"20s"`
	// TrustedProxies are the addresses or CIDR ranges whose X-Forwarded-For is believed.
	// Empty means none: the client IP is the TCP peer.
	TrustedProxies []string `env:"TRUSTED_PROXIES" envSeparator:","`

	JWTIssuer   string        `env:"JWT_ISSUER" envDefault:"chatbotd"`
	JWTAudience string        `env:"JWT_AUDIENCE" envDefault:"chatbotd-api"`
	AccessTTL   time.Duration `env:"JWT_ACCESS_TTL" envDefault:"15m"`
	RefreshTTL  time.Duration `env:"JWT_REFRESH_TTL" envDefault:"720h"`
	// JWTSigningKeys are base64 Ed25519 seeds (32 bytes), comma separated; the first signs,
	// the others still verify (key rotation). Empty: a key is created once and kept in the
	// database, which is right for one developer machine and wrong for production.
	JWTSigningKeys []string `env:"JWT_SIGNING_KEYS" envSeparator:","`
	// AuthCacheTTL is how long a process may keep a session's or an API token's
	// authentication state in memory. The transactions that change that state invalidate
	// it in every process (NOTIFY), so this is only a bound; 0 reads the database on
	// every request.
	AuthCacheTTL time.Duration `env:"AUTH_CACHE_TTL" envDefault:"1m"`

	// SecretsKey (base64, 32 bytes) seals webhook secrets at rest. Empty: a key is made
	// once and kept in the database (development only).
	SecretsKey string `env:"SECRETS_KEY"`
	// AuditSigningKey (base64, at least 32 bytes) signs the links of the audit chain. Keep
	// it out of the database: whoever has it can rewrite history undetected. Empty: a key
	// is made once and kept in the database (development only).
	AuditSigningKey string `env:"AUDIT_SIGNING_KEY"`
	// AuditRetentionDays is how long `chatbotd audit prune` keeps audit entries in the read
	// model (0: forever). The event log is never pruned.
	AuditRetentionDays int `env:"AUDIT_RETENTION_DAYS" envDefault:"0"`
	// AllowPrivateTargets lets outgoing calls reach private and loopback addresses and
	// plain http: for local development and tests only.
	AllowPrivateTargets bool `env:"ALLOW_PRIVATE_TARGETS" envDefault:"false"`

	// ResponderWorkers is how many consumers share the knowledge-base responder's queue
	// in one process (each message is a stream of its own: no order to keep).
	ResponderWorkers int `env:"RESPONDER_WORKERS" envDefault:"4"`

	// The webhook responder: per-call timeout, attempts, first backoff (doubling), and
	// how many calls one process makes at once.
	WebhookTimeout  time.Duration `env:"WEBHOOK_TIMEOUT" envDefault:"10s"`
	WebhookAttempts int           `env:"WEBHOOK_ATTEMPTS" envDefault:"3"`
	WebhookBackoff  time.Duration `env:"WEBHOOK_BACKOFF" envDefault:"500ms"`
	WebhookWorkers  int           `env:"WEBHOOK_WORKERS" envDefault:"8"`

	// Outgoing webhooks (subscriptions): calls at once per process, attempts per
	// delivery, the first retry delay (doubling per attempt up to the max: about 14 hours
	// over 12 attempts), consecutive failed attempts that disable a subscription, and how
	// long finished deliveries are kept. Calls use WEBHOOK_TIMEOUT.
	WebhookDeliveryWorkers   int           `env:"WEBHOOK_DELIVERY_WORKERS" envDefault:"16"`
	WebhookDeliveryAttempts  int           `env:"WEBHOOK_DELIVERY_ATTEMPTS" envDefault:"12"`
	WebhookRetryBase         time.Duration `env:"WEBHOOK_RETRY_BASE" envDefault:"30s"`
	WebhookRetryMax          time.Duration `env:"WEBHOOK_RETRY_MAX" envDefault:"6h"`
	WebhookDisableAfter      int           `env:"WEBHOOK_DISABLE_AFTER" envDefault:"20"`
	WebhookDeliveryRetention time.Duration `env:"WEBHOOK_DELIVERY_RETENTION" envDefault:"720h"`

	// SMTPURL is where email notifications go (smtp://user:password@host:587 with
	// STARTTLS, smtps://... with TLS; see reactors.ParseSMTPURL). Empty: emails are
	// written to the log instead.
	SMTPURL  string `env:"SMTP_URL"`
	SMTPFrom string `env:"SMTP_FROM" envDefault:"chatbotd <no-reply@chatbotd.localhost>"`

	// PasswordHashConcurrency bounds how many argon2id hashes run at once (each takes
	// 19 MiB and one core), so a login storm cannot exhaust memory; 0, the default, is
	// the number of cores Go runs on.
	PasswordHashConcurrency int `env:"PASSWORD_HASH_CONCURRENCY" envDefault:"0"`

	// Rate limits, per minute: API calls per credential, unauthenticated calls per client
	// IP, failed logins per (IP, email) and per email from any IP.
	RateLimitAPI          int `env:"RATE_LIMIT_API_PER_MINUTE" envDefault:"600"`
	RateLimitPublic       int `env:"RATE_LIMIT_PUBLIC_PER_MINUTE" envDefault:"120"`
	LoginFailuresPerIP    int `env:"LOGIN_FAILURES_PER_MINUTE" envDefault:"5"`
	LoginFailuresPerEmail int `env:"LOGIN_FAILURES_PER_EMAIL_PER_MINUTE" envDefault:"20"`

	LogLevel string `env:"LOG_LEVEL" envDefault:"info"`
	// MetricsToken, when set, is the bearer token GET /metrics requires (a scraper's
	// "authorization" setting); empty leaves /metrics open, as on a private network.
	MetricsToken string `env:"METRICS_TOKEN"`
	// PprofAddr, when set, serves net/http/pprof on its own listener (say 127.0.0.1:6060),
	// never on the API's: profiles expose internals and cost CPU while they run.
	PprofAddr string `env:"PPROF_ADDR"`

	RelayBatchSize int `env:"RELAY_BATCH_SIZE" envDefault:"500"`
	// ProjectorBatchSize is the most events one transaction of the projectors applies (the
	// group's, or a partition's): a backlog is applied in fewer, larger transactions, each
	// with one lock, one version-row statement and one position of its own.
	ProjectorBatchSize int `env:"PROJECTOR_BATCH_SIZE" envDefault:"500"`
	// ReactorBatchSize is the same for the reactors (responder, trainer, deliverer,
	// mailer): they call out and append events, and the responder's competing consumers
	// each hold a batch of messages, which a larger one would keep from the others.
	ReactorBatchSize int `env:"REACTOR_BATCH_SIZE" envDefault:"200"`
	// ProjectorDeliveryLimit is how often RabbitMQ redelivers one message (e.g. after
	// consumers crashed on it) before dead-lettering it.
	ProjectorDeliveryLimit int `env:"PROJECTOR_DELIVERY_LIMIT" envDefault:"5"`
	// ProjectorPartitions splits each projector's events over this many queues by
	// organization, so that as many processes of the projectors role share it. The
	// deployment's layout is recorded: a process started with another value switches it
	// (the old queues drain first); running processes follow.
	ProjectorPartitions int `env:"PROJECTOR_PARTITIONS" envDefault:"1"`
	// ProjectorSweepInterval is how long after the relay published an event the sweep
	// checks that every consumer on the projector runtime applied it, and publishes again
	// what one never got (projections.Sweep); it is also how often the sweep runs. 0
	// turns it off.
	ProjectorSweepInterval time.Duration `env:"PROJECTOR_SWEEP_INTERVAL" envDefault:"30s"`
	// GINMergeInterval is how often a projectors process merges the pending lists of the
	// GIN indexes (projections.PendingLists), so that no projector's batch has to. 0 turns
	// it off: PostgreSQL then merges a list in the insert that fills it.
	GINMergeInterval time.Duration `env:"GIN_MERGE_INTERVAL" envDefault:"1s"`
}

// Load reads the environment (given as KEY=VALUE pairs, so tests can pass their own) and validates.
func Load(environ []string) (Config, error) {
	var c Config
	vars := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			vars[k] = v
		}
	}
	if err := env.ParseWithOptions(&c, env.Options{Environment: vars}); err != nil {
		return c, parseErrors(err)
	}
	if c.DatabaseReadURL == "" {
		c.DatabaseReadURL = c.DatabaseURL
	}
	return c, c.Validate()
}

// parseErrors names the environment variable of each value that did not parse (the
// library names the Go field).
func parseErrors(err error) error {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return err
	}
	var out []error
	t := reflect.TypeOf(Config{})
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) {
			if f, ok := t.FieldByName(pe.Name); ok {
				out = append(out, fmt.Errorf("%s: %v", f.Tag.Get("env"), pe.Err))
				continue
			}
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}

// Validate reports every bad value at once, each on its own line.
func (c Config) Validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(c.AppEnv == Development || c.AppEnv == Production, "APP_ENV must be development or production")
	if c.AppEnv == Production {
		// A key kept in the database is readable by anyone who reads the database: they
		// could mint access tokens, open webhook secrets, or re-sign a rewritten audit chain.
		for _, k := range []struct{ name, value string }{{"JWT_SIGNING_KEYS", strings.Join(c.JWTSigningKeys, "")},
			{"SECRETS_KEY", c.SecretsKey}, {"AUDIT_SIGNING_KEY", c.AuditSigningKey}} {
			check(strings.TrimSpace(k.value) != "", "%s must be set when APP_ENV=production (make one with: openssl rand -base64 32)", k.name)
		}
	}
	for name, raw := range map[string]string{"DATABASE_URL": c.DatabaseURL, "DATABASE_READ_URL": c.DatabaseReadURL} {
		u, err := url.Parse(raw)
		check(err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql"), "%s must be a postgres:// URL", name)
	}
	if u, err := url.Parse(c.RedisURL); err != nil || !slices.Contains(cache.URLSchemes, u.Scheme) {
		check(false, "REDIS_URL must be a redis:// URL (or redis-sentinel://, redis-cluster://)")
	}
	nodes := broker.SplitURLs(c.AMQPURL)
	check(len(nodes) > 0, "AMQP_URL must be an amqp:// URL, or a comma-separated list of them (one per cluster node)")
	for _, n := range nodes {
		if u, err := url.Parse(n); err != nil || (u.Scheme != "amqp" && u.Scheme != "amqps") || u.Host == "" {
			check(false, "AMQP_URL must be an amqp:// URL, or a comma-separated list of them (one per cluster node)")
			break
		}
	}
	check(c.RedisLocalEntries >= 0, "REDIS_LOCAL_CACHE_ENTRIES must be 0 (off) or more")
	check(c.RedisLocalMaxStaleness >= 100*time.Millisecond && c.RedisLocalMaxStaleness <= time.Hour,
		"REDIS_LOCAL_CACHE_MAX_STALENESS must be between 100ms and 1h")
	check(c.AMQPExchange != "", "AMQP_EXCHANGE must not be empty")
	check(c.HTTPAddr != "", "HTTP_ADDR must not be empty")
	check(c.DatabaseMaxConn >= 4, "DATABASE_MAX_CONNS must be at least 4")
	check(c.ReadHeaderTimeout > 0 && c.ReadTimeout > 0 && c.WriteTimeout > 0 && c.IdleTimeout > 0,
		"HTTP timeouts must be positive")
	check(c.AccessTTL >= time.Minute && c.AccessTTL <= 24*time.Hour, "JWT_ACCESS_TTL must be between 1m and 24h")
	check(c.RefreshTTL >= c.AccessTTL, "JWT_REFRESH_TTL must not be shorter than JWT_ACCESS_TTL")
	check(c.JWTIssuer != "" && c.JWTAudience != "", "JWT_ISSUER and JWT_AUDIENCE must not be empty")
	if c.AuditSigningKey != "" {
		k, err := base64.StdEncoding.DecodeString(c.AuditSigningKey)
		check(err == nil && len(k) >= 32, "AUDIT_SIGNING_KEY must be at least 32 bytes, base64")
	}
	check(c.AuditRetentionDays >= 0, "AUDIT_RETENTION_DAYS must not be negative")
	for i, k := range c.JWTSigningKeys {
		seed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(k))
		check(err == nil && len(seed) == ed25519.SeedSize, "JWT_SIGNING_KEYS[%d] must be a base64 32-byte Ed25519 seed", i)
	}
	for _, p := range c.TrustedProxies {
		p = strings.TrimSpace(p)
		_, perr := netip.ParsePrefix(p)
		_, aerr := netip.ParseAddr(p)
		check(perr == nil || aerr == nil, "TRUSTED_PROXIES: %q is neither an IP nor a CIDR", p)
	}
	check(c.RateLimitAPI >= 1 && c.RateLimitPublic >= 1 && c.LoginFailuresPerIP >= 1 && c.LoginFailuresPerEmail >= 1,
		"RATE_LIMIT_* and LOGIN_FAILURES_* must be at least 1")
	if c.SecretsKey != "" {
		k, err := base64.StdEncoding.DecodeString(c.SecretsKey)
		check(err == nil && len(k) == 32, "SECRETS_KEY must be base64 of 32 bytes")
	}
	check(c.ResponderWorkers >= 1, "RESPONDER_WORKERS must be at least 1")
	check(c.WebhookTimeout > 0 && c.WebhookAttempts >= 1 && c.WebhookBackoff >= 0 && c.WebhookWorkers >= 1,
		"WEBHOOK_TIMEOUT, WEBHOOK_ATTEMPTS, WEBHOOK_BACKOFF and WEBHOOK_WORKERS must be positive")
	check(c.WebhookDeliveryWorkers >= 1 && c.WebhookDeliveryAttempts >= 1 && c.WebhookRetryBase > 0 &&
		c.WebhookRetryMax >= c.WebhookRetryBase && c.WebhookDisableAfter >= 1 && c.WebhookDeliveryRetention >= 0,
		"WEBHOOK_DELIVERY_WORKERS, WEBHOOK_DELIVERY_ATTEMPTS, WEBHOOK_RETRY_BASE and WEBHOOK_DISABLE_AFTER must be positive, WEBHOOK_RETRY_MAX at least WEBHOOK_RETRY_BASE")
	_, ferr := mail.ParseAddress(c.SMTPFrom)
	check(ferr == nil, "SMTP_FROM must be an email address, e.g. chatbotd <no-reply@example.com>")
	check(c.PasswordHashConcurrency >= 0, "PASSWORD_HASH_CONCURRENCY must be 0 (one per core) or more")
	check(c.RelayBatchSize >= 1 && c.RelayBatchSize <= 10000, "RELAY_BATCH_SIZE must be 1..10000")
	check(c.ProjectorBatchSize >= 1 && c.ProjectorBatchSize <= 5000, "PROJECTOR_BATCH_SIZE must be 1..5000")
	check(c.ReactorBatchSize >= 1 && c.ReactorBatchSize <= 5000, "REACTOR_BATCH_SIZE must be 1..5000")
	check(c.ProjectorDeliveryLimit >= 1, "PROJECTOR_DELIVERY_LIMIT must be at least 1")
	check(c.ProjectorPartitions >= 1 && c.ProjectorPartitions <= 64, "PROJECTOR_PARTITIONS must be 1..64")
	check(c.ProjectorSweepInterval >= 0, "PROJECTOR_SWEEP_INTERVAL must not be negative")
	check(c.GINMergeInterval >= 0, "GIN_MERGE_INTERVAL must not be negative")
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "error":
	default:
		check(false, "LOG_LEVEL must be one of debug, info, warn, error")
	}
	return errors.Join(errs...)
}
