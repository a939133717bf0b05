// Package testenv gives each test its own slice of the real local services: a database
// cloned from a migrated template, a Redis key prefix and RabbitMQ names, each removed
// when the test ends. Only _test.go files import it; nothing in the binary does.
package testenv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/broker"
	"github.com/chatbotsaas/chatbotd/internal/db"
	"github.com/chatbotsaas/chatbotd/migrations"
)

func getenv(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// PostgresURL is the server tests create their databases on.
func PostgresURL(database string) string {
	base := getenv("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	cfg, err := pgx.ParseConfig(base)
	if err != nil {
		panic(err)
	}
	return strings.Replace(base, "/"+cfg.Database+"?", "/"+database+"?", 1)
}

// RedisURL is the Redis server tests use (each with its own key prefix).
func RedisURL() string { return getenv("TEST_REDIS_URL", "redis://127.0.0.1:6379/0") }

// AMQPURL is the RabbitMQ server tests use (each with its own exchange and queues).
func AMQPURL() string { return getenv("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/") }

// Logger writes to the test log at debug level when -v, else discards.
func Logger(tb testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(testWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

type testWriter struct{ tb testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func templateName() string {
	h := sha256.New()
	_ = fs.WalkDir(migrations.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := fs.ReadFile(migrations.FS, path)
		h.Write([]byte(path))
		h.Write(b)
		return nil
	})
	return "chatbotd_tpl_" + hex.EncodeToString(h.Sum(nil))[:12]
}

// ensureTemplate creates the migrated template database once per migration set; test
// processes of several packages race for it under an advisory lock.
func ensureTemplate(ctx context.Context, admin *pgx.Conn) (string, error) {
	name := templateName()
	if _, err := admin.Exec(ctx, `SELECT pg_advisory_lock(727274)`); err != nil {
		return "", err
	}
	defer admin.Exec(context.Background(), `SELECT pg_advisory_unlock(727274)`)
	var exists bool
	if err := admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return "", err
	}
	if exists {
		return name, nil
	}
	building := name + "_building"
	_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+building+" WITH (FORCE)")
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+building); err != nil {
		return "", err
	}
	pool, err := db.Open(ctx, PostgresURL(building), 4)
	if err != nil {
		return "", err
	}
	err = db.Migrate(ctx, pool, slog.New(slog.DiscardHandler))
	pool.Close()
	if err != nil {
		return "", err
	}
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+building+" RENAME TO "+name); err != nil {
		return "", err
	}
	return name, nil
}

// Database is one test's database.
type Database struct {
	Name string
	URL  string
	Pool *pgxpool.Pool
}

// MustDatabase creates a fresh migrated database for tb and drops it when tb ends.
func MustDatabase(tb testing.TB) Database {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, PostgresURL("postgres"))
	if err != nil {
		tb.Fatalf("connect to postgres: %v", err)
	}
	defer admin.Close(context.Background())
	tpl, err := ensureTemplate(ctx, admin)
	if err != nil {
		tb.Fatalf("template database: %v", err)
	}
	name := "chatbotd_test_" + strings.ReplaceAll(uuid.NewString()[:18], "-", "")
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name+" TEMPLATE "+tpl); err != nil {
		tb.Fatalf("create test database: %v", err)
	}
	d := Database{Name: name, URL: PostgresURL(name)}
	d.Pool, err = db.Open(ctx, d.URL, 20)
	if err != nil {
		tb.Fatalf("open test database: %v", err)
	}
	// A clone is another store, as a database migrated afresh would be.
	if _, err := d.Pool.Exec(ctx, `UPDATE store_identity SET id = gen_random_uuid()`); err != nil {
		tb.Fatalf("give the test database its own store identity: %v", err)
	}
	tb.Cleanup(func() {
		d.Pool.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		admin, err := pgx.Connect(ctx, PostgresURL("postgres"))
		if err != nil {
			tb.Errorf("drop test database: %v", err)
			return
		}
		defer admin.Close(ctx)
		if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("drop test database: %v", err)
		}
	})
	return d
}

// Redis is one test's Redis client and key prefix.
type Redis struct {
	URL    string
	Prefix string
	Client *redis.Client
}

// MustRedis returns a client and a key prefix of tb's own, deleting its keys when tb ends.
func MustRedis(tb testing.TB) Redis {
	tb.Helper()
	opt, err := redis.ParseURL(RedisURL())
	if err != nil {
		tb.Fatal(err)
	}
	r := Redis{URL: RedisURL(), Prefix: "test:" + uuid.NewString()[:8] + ":", Client: redis.NewClient(opt)}
	if err := r.Client.Ping(context.Background()).Err(); err != nil {
		tb.Fatalf("redis: %v", err)
	}
	tb.Cleanup(func() {
		ctx := context.Background()
		// redis_rate puts "rate:" before the keys it is given (the rate limiter's).
		for _, pattern := range []string{r.Prefix + "*", "rate:" + r.Prefix + "*"} {
			iter := r.Client.Scan(ctx, 0, pattern, 500).Iterator()
			for iter.Next(ctx) {
				r.Client.Del(ctx, iter.Val())
			}
		}
		r.Client.Close()
	})
	return r
}

// AMQP is one test's RabbitMQ names.
type AMQP struct {
	URL         string
	Exchange    string
	QueuePrefix string
	queues      []string
	exchanges   []string
	tb          testing.TB
}

// MustAMQP returns an exchange name and queue prefix of tb's own; the exchange, its
// companions and every queue named with Queue are deleted when tb ends.
func MustAMQP(tb testing.TB) *AMQP {
	tb.Helper()
	id := uuid.NewString()[:8]
	a := &AMQP{URL: AMQPURL(), Exchange: "test." + id + ".events", QueuePrefix: "test." + id + ".", tb: tb}
	conn, err := amqp.Dial(a.URL)
	if err != nil {
		tb.Fatalf("rabbitmq: %v", err)
	}
	conn.Close()
	tb.Cleanup(a.cleanup)
	return a
}

// Queue returns the name of a queue with the test's prefix and deletes it (and its dead
// letter queue) at the end.
func (a *AMQP) Queue(name string) string {
	q := a.QueuePrefix + name
	a.queues = append(a.queues, q, q+".dead")
	return q
}

// MustEventChannel dials RabbitMQ and returns the connection (closed when tb ends) and a
// channel on which the test's event exchange is declared, with its companions.
func (a *AMQP) MustEventChannel(tb testing.TB) (*amqp.Connection, *amqp.Channel) {
	tb.Helper()
	conn, err := amqp.Dial(a.URL)
	if err != nil {
		tb.Fatalf("rabbitmq: %v", err)
	}
	tb.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		tb.Fatalf("rabbitmq channel: %v", err)
	}
	if err := broker.DeclareEventExchange(ch, a.Exchange); err != nil {
		tb.Fatalf("declare the event exchange: %v", err)
	}
	return conn, ch
}

// Partitioned names the queues and split exchange of the consumer name split over n
// partitions (broker.Layout) and deletes them at the end.
func (a *AMQP) Partitioned(name string, n int) {
	l := broker.Layout{Base: broker.QueueSpec{Name: a.QueuePrefix + name}, Partitions: n}
	for _, q := range l.Queues() {
		a.queues = append(a.queues, q.Name)
	}
	a.exchanges = append(a.exchanges, l.SplitExchange())
}

// WaitConsumer waits until queue has a consumer. A consumer that binds its queue before it
// consumes (all of ours do) is then bound: what is published from now on reaches it.
// Waiting only for the queue to exist is a race: the bindings come after the declaration.
func (a *AMQP) WaitConsumer(queue string) {
	a.tb.Helper()
	conn, err := amqp.Dial(a.URL)
	if err != nil {
		a.tb.Fatalf("rabbitmq: %v", err)
	}
	defer conn.Close()
	Eventually(a.tb, 15*time.Second, func() error {
		ch, err := conn.Channel()
		if err != nil {
			return err
		}
		defer ch.Close()
		q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
		if err != nil {
			return err
		}
		if q.Consumers == 0 {
			return fmt.Errorf("queue %s has no consumer", queue)
		}
		return nil
	})
}

func (a *AMQP) cleanup() {
	conn, err := amqp.Dial(a.URL)
	if err != nil {
		a.tb.Errorf("rabbitmq cleanup: %v", err)
		return
	}
	defer conn.Close()
	for _, q := range append(a.queues, a.Exchange+".unrouted", a.QueuePrefix+broker.ClaimSuffix) {
		if ch, err := conn.Channel(); err == nil {
			_, _ = ch.QueueDelete(q, false, false, false)
			ch.Close()
		}
	}
	for _, x := range append(a.exchanges, a.Exchange, a.Exchange+".unrouted", a.Exchange+".dlx", broker.FramesExchange(a.Exchange)) {
		if ch, err := conn.Channel(); err == nil {
			_ = ch.ExchangeDelete(x, false, false)
			ch.Close()
		}
	}
}

// PublishEvents publishes envs as the relay does (eventstore.RelayConfig.Frames): each
// alone to the event exchange, by its type, for the queues bound by patterns, and all of
// them in one frame to the frames exchange, for a projectors' group. A frame holds one
// bucket's events: envs are of one organization, or the test does not partition.
func PublishEvents(tb testing.TB, ch *amqp.Channel, exchange string, envs ...events.Envelope) {
	tb.Helper()
	var frame []byte
	for _, e := range envs {
		body, err := e.MarshalJSON()
		if err != nil {
			tb.Fatal(err)
		}
		bucket := amqp.Table{events.PartitionHeader: events.PartitionValue(events.PartitionBucket(e.OrganizationID))}
		if err := ch.Publish(exchange, e.Type, false, false, amqp.Publishing{Headers: bucket, MessageId: e.ID.String(),
			DeliveryMode: amqp.Persistent, Body: body}); err != nil {
			tb.Fatalf("publish %s: %v", e.ID, err)
		}
		frame = events.AppendFrame(frame, body)
	}
	if len(envs) == 0 {
		return
	}
	headers := amqp.Table{events.PartitionHeader: events.PartitionValue(events.PartitionBucket(envs[0].OrganizationID)),
		broker.FrameHeader: int32(len(envs))}
	if err := ch.Publish(broker.FramesExchange(exchange), "", false, false, amqp.Publishing{Headers: headers,
		MessageId: "frame:" + envs[0].ID.String(), DeliveryMode: amqp.Persistent, Body: events.CloseFrame(frame)}); err != nil {
		tb.Fatalf("publish a frame: %v", err)
	}
}

// Eventually polls cond until it holds or the timeout passes.
func Eventually(tb testing.TB, timeout time.Duration, cond func() error) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("condition not met within %v: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Querier runs a query: a pool, a connection or a transaction (with its settings).
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Explain is PostgreSQL's plan of sql with args on q, one line per line of the plan.
// options go in EXPLAIN's parentheses ("ANALYZE, BUFFERS"); empty, it only plans.
func Explain(tb testing.TB, q Querier, options, sql string, args ...any) string {
	tb.Helper()
	explain := `EXPLAIN `
	if options != "" {
		explain += `(` + options + `) `
	}
	rows, err := q.Query(context.Background(), explain+sql, args...)
	if err != nil {
		tb.Fatalf("explain: %v", err)
	}
	var plan []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			tb.Fatalf("explain: %v", err)
		}
		plan = append(plan, line)
	}
	if err := rows.Err(); err != nil {
		tb.Fatalf("explain: %v", err)
	}
	return strings.Join(plan, "\n")
}
