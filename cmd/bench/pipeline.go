package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/broker"
	"github.com/chatbotsaas/chatbotd/internal/cache"
	"github.com/chatbotsaas/chatbotd/internal/config"
	"github.com/chatbotsaas/chatbotd/internal/measure"
	"github.com/chatbotsaas/chatbotd/projections"
)

// pipelineFigures measures the relay and a projector on a backlog of n user.created
// events written straight into the log, against their baselines in the same run:
// a bare amqp091-go publisher with a window of outstanding confirms and watermill-amqp's
// publisher for the relay, pgbench upserting the same rows in batches for the projector.
func pipelineFigures(ctx context.Context, o options, w io.Writer) error {
	pool, dbURL, err := freshDatabase(ctx, o, "_pipeline")
	if err != nil {
		return err
	}
	defer pool.Close()
	n := o.pipelineEvents
	org := uuid.New()
	if _, err := pool.Exec(ctx, `INSERT INTO events (id, stream_type, stream_id, stream_version, type, schema_version,
			organization_id, actor_type, data, occurred_at)
		SELECT `+uuidv7SQL+`, 'user', `+uuidv7SQL+`, 1, 'user.created', 1, $1, 'system',
			jsonb_build_object('name', 'Bench User ' || i, 'email', 'user' || i || '@bench.example',
				'roles', '["member"]'::jsonb, 'status', 'active'), clock_timestamp()
		FROM generate_series(1, $2) AS i`, org, n); err != nil {
		return fmt.Errorf("seed user events: %w", err)
	}
	if _, err := pool.Exec(ctx, `ANALYZE events`); err != nil {
		return err
	}
	var last int64
	if err := pool.QueryRow(ctx, `SELECT max(position) FROM events`).Scan(&last); err != nil {
		return err
	}

	suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
	exchange := "bench.pipeline." + suffix
	conn := broker.Dial(o.amqpURL, nil)
	defer conn.Close()
	rdb := redis.NewClient(&redis.Options{Addr: o.redisAddr, PoolSize: 16})
	defer rdb.Close()
	prefix := "bench:" + suffix + ":"
	defer dropKeys(context.WithoutCancel(ctx), rdb, prefix)

	accounts := projections.NewAccounts(pool, cache.New(rdb, prefix, time.Hour), nil)
	runner, err := projections.NewRunner(pool, conn, accounts, projections.Config{Exchange: exchange, QueuePrefix: "bench." + suffix + ".",
		BatchSize: projectorBatch()})
	if err != nil {
		return err
	}
	queue := runner.Queue()
	baselineQueue := broker.QueueSpec{Name: "bench." + suffix + ".baseline", Exchange: exchange, Bindings: []string{"user.*"}, DeliveryLimit: 5}
	defer deleteQueues(conn, exchange, queue, baselineQueue)

	// The relay: from its start to its checkpoint at the last event.
	relay, err := eventstore.NewRelay(pool, conn, eventstore.RelayConfig{Name: "bench-" + suffix, Exchange: exchange, Queues: []broker.QueueSpec{queue}})
	if err != nil {
		return err
	}
	rctx, stopRelay := context.WithCancel(ctx)
	start := time.Now()
	relayDone := make(chan struct{})
	go func() { _ = relay.Run(rctx); close(relayDone) }()
	err = waitRelayed(ctx, pool, "bench-"+suffix, last)
	relayRate := float64(n) / time.Since(start).Seconds()
	stopRelay()
	<-relayDone
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	fmt.Fprintf(os.Stderr, "pipeline: relay %.0f events/s\n", relayRate)

	// The projector: the queue now holds the whole backlog.
	pctx, stopRunner := context.WithCancel(ctx)
	start = time.Now()
	runnerDone := make(chan struct{})
	go func() { _ = runner.Run(pctx); close(runnerDone) }()
	err = waitApplied(ctx, pool, accounts.Name(), n)
	projectorRate := float64(n) / time.Since(start).Seconds()
	stopRunner()
	<-runnerDone
	if err != nil {
		return fmt.Errorf("projector: %w", err)
	}
	if err := checkCached(ctx, rdb, prefix, n); err != nil {
		return fmt.Errorf("projector: %w", err)
	}
	fmt.Fprintf(os.Stderr, "pipeline: projector %.0f events/s\n", projectorRate)

	served, servedCPU, err := accountsAsServed(ctx, pool, conn, rdb, n, last, suffix)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "pipeline: projector as serve runs it %.0f events/s; CPU an event: %s\n", served, perItem(servedCPU, served))

	// The relay's baselines publish the very bodies the relay published.
	bodies, err := envelopeBodies(ctx, pool, n)
	if err != nil {
		return err
	}
	bare, err := barePublishRate(ctx, conn, exchange, baselineQueue, bodies, 1000)
	if err != nil {
		return fmt.Errorf("bare publisher: %w", err)
	}
	fmt.Fprintf(os.Stderr, "pipeline: bare amqp091 publisher %.0f/s\n", bare)
	wmBodies := bodies[:min(len(bodies), o.watermillEvents)]
	wmDefault, err := watermillRate(ctx, o.amqpURL, conn, "bench."+suffix+".wm-default", wmBodies, false)
	if err != nil {
		return fmt.Errorf("watermill default: %w", err)
	}
	fmt.Fprintf(os.Stderr, "pipeline: watermill default %.0f/s\n", wmDefault)
	wmConfirm, err := watermillRate(ctx, o.amqpURL, conn, "bench."+suffix+".wm-confirm", wmBodies, true)
	if err != nil {
		return fmt.Errorf("watermill confirm: %w", err)
	}
	fmt.Fprintf(os.Stderr, "pipeline: watermill confirmed %.0f/s\n", wmConfirm)

	upsert, versioned, floorCPU, err := pgbenchUpsertRates(ctx, pool, dbURL, o.duration)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "pipeline: pgbench batched upsert %.0f rows/s, with version rows %.0f rows/s (%.2f×); CPU a row of the floor: %s\n",
		upsert, versioned, versioned/upsert, perItem(floorCPU, versioned))

	fmt.Fprint(w, "\n### Relay and projector\n\n")
	fmt.Fprintf(w, "A backlog of %d `user.created` events (one stream each) written straight into the log. "+
		"The relay (batches of 500, up to two batches in flight on one confirm-mode channel, mandatory persistent publishes "+
		"to the topic exchange, the checkpoint saved in order as batches are confirmed, at most every 100 ms while it has "+
		"events to publish) publishes it into the accounts projector's quorum queue; the rate runs from its start "+
		"to its checkpoint at the last event. Then the accounts projector (batches of %d, `PROJECTOR_BATCH_SIZE`'s default: `users` row, stream versions "+
		"for dedupe and order, position, commit; then the cache entry of every user in Redis) drains the queue; the rate runs "+
		"until it has applied every event, and every user is checked in the cache. That is the projector alone on a queue of its "+
		"own, each event a message and each batch's commit waiting for the disk. `chatbotd serve` runs it otherwise, and the "+
		"second accounts figure is that: a member of a projectors' group (here its only member, so that the figure is its own), "+
		"fed by a relay that also publishes frames (up to a relay batch's events of a bucket in one message), its batches committed without waiting for the disk and "+
		"acknowledged once they are on it; the same backlog, the read model, versions and cache emptied first, the frames "+
		"published before the projector starts.\n\n", n, projectorBatch())
	fmt.Fprintf(w, "Baselines, in the same run: a bare amqp091-go publisher with a window of 1,000 outstanding confirms, publishing "+
		"the same bodies (already encoded) to the same kind of queue; watermill-amqp v3's publisher with `NewDurablePubSubConfig` "+
		"(its default durable set-up, which does not wait for confirms: the rate runs until the queue holds every message) and "+
		"with `ConfirmDelivery: true` (it waits for each confirm before the next publish), %d messages each; pgbench upserting "+
		"the same rows in batches of %d, the projector's (`INSERT … SELECT … ON CONFLICT DO UPDATE`, one client, like one projector) into a "+
		"copy of the `users` table with its indexes. And the floor of a projector that keeps the stream versions of the "+
		"design's dedupe and order in a table of their own, as chatbotd's do: the same upserts, each batch's version rows "+
		"upserted by the same statement into a copy of `projection_streams` (no decoding, no read-back, no cache). The "+
		"two pgbench figures are each the mean of two runs, alternating.\n\n", len(wmBodies), projectorBatch())
	fmt.Fprint(w, "| work | events/s | baseline | ratio |\n|---|---:|---|---:|\n")
	fmt.Fprintf(w, "| bare amqp091-go publisher, window of 1,000 confirms | %.0f | | |\n", bare)
	fmt.Fprintf(w, "| watermill-amqp, default durable publisher (no confirms) | %.0f | | |\n", wmDefault)
	fmt.Fprintf(w, "| watermill-amqp, `ConfirmDelivery: true` | %.0f | | |\n", wmConfirm)
	fmt.Fprintf(w, "| pgbench batched upsert, rows/s | %.0f | | |\n", upsert)
	fmt.Fprintf(w, "| pgbench batched upsert with its version rows (the floor) | %.0f | pgbench batched upsert | %.2f× |\n",
		versioned, versioned/upsert)
	fmt.Fprintf(w, "| **relay**, confirmed | %.0f | bare publisher | %.2f× |\n", relayRate, relayRate/bare)
	fmt.Fprintf(w, "| | | watermill default | %.2f× |\n", relayRate/wmDefault)
	fmt.Fprintf(w, "| | | watermill confirmed | %.2f× |\n", relayRate/wmConfirm)
	fmt.Fprintf(w, "| **accounts projector**, read model and cache, alone on its queue | %.0f | pgbench batched upsert | %.2f× |\n", projectorRate, projectorRate/upsert)
	fmt.Fprintf(w, "| **accounts projector**, as `serve` runs it | %.0f | pgbench batched upsert | %.2f× |\n", served, served/upsert)
	fmt.Fprintf(w, "| | | the floor (with its version rows) | %.2f× |\n", served/versioned)
	fmt.Fprintf(w, "\nCPU an event, by process (from `/proc`, over the drain; the runner is in the bench's process): "+
		"the accounts projector as `serve` runs it: %s; the floor, a row: %s.\n", perItem(servedCPU, served), perItem(floorCPU, versioned))
	return nil
}

// accountsAsServed drains the same backlog into the accounts projector as `chatbotd serve`
// runs it: a member of a projectors' group (here the only one, so that the figure is
// its own; its share of each batch applied in the group's transaction), fed frames by a
// relay that publishes them, and committing without waiting for the disk, each batch
// acknowledged once it is on it
// (projections.Config.DeferFlush). The read model and its versions are emptied first, and
// the cache entries go under a prefix of their own. The relay publishes the whole backlog
// (up to last) before the projector starts, as for the figure of the projector alone; the
// rate, in events per second, runs from the projector's start until it has applied every
// event.
//
// It also returns the processes' shares of the cores over the drain.
func accountsAsServed(ctx context.Context, pool *pgxpool.Pool, conn *broker.Conn, rdb *redis.Client, n int, last int64, suffix string) (float64, map[string]float64, error) {
	if _, err := pool.Exec(ctx, `TRUNCATE users`); err != nil {
		return 0, nil, err
	}
	for _, table := range []string{"projection_streams", "projection_positions"} {
		if _, err := pool.Exec(ctx, `DELETE FROM `+table+` WHERE projection = $1`, projections.AccountsName); err != nil {
			return 0, nil, err
		}
	}
	exchange := "bench.pipeline." + suffix + ".served"
	prefix := "bench:" + suffix + ":served:"
	defer dropKeys(context.WithoutCancel(ctx), rdb, prefix)
	group := projections.NewGroup(projections.GroupName, projections.NewAccounts(pool, cache.New(rdb, prefix, time.Hour), nil))
	runner, err := projections.NewRunner(pool, conn, group, projections.Config{Exchange: exchange,
		QueuePrefix: "bench." + suffix + ".served.", DeferFlush: true, BatchSize: projectorBatch()})
	if err != nil {
		return 0, nil, err
	}
	queue := runner.Queue()
	defer deleteQueues(conn, exchange, queue, runner.MemberQueue(projections.AccountsName))
	relay, err := eventstore.NewRelay(pool, conn, eventstore.RelayConfig{Name: "bench-served-" + suffix, Exchange: exchange,
		Queues: []broker.QueueSpec{queue}, Frames: true})
	if err != nil {
		return 0, nil, err
	}
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan struct{}, 2)
	go func() { _ = relay.Run(rctx); done <- struct{}{} }()
	if err := waitRelayed(ctx, pool, "bench-served-"+suffix, last); err != nil {
		return 0, nil, fmt.Errorf("relay of frames: %w", err)
	}
	var rate float64
	cpu, err := cpuShares(func() error {
		start := time.Now()
		go func() { _ = runner.Run(rctx); done <- struct{}{} }()
		err := waitApplied(ctx, pool, projections.AccountsName, n)
		rate = float64(n) / time.Since(start).Seconds()
		return err
	})
	stop()
	<-done
	<-done
	if err != nil {
		return 0, nil, fmt.Errorf("projector as served: %w", err)
	}
	if err := checkCached(ctx, rdb, prefix, n); err != nil {
		return 0, nil, fmt.Errorf("projector as served: %w", err)
	}
	return rate, cpu, nil
}

// waitRelayed waits until the relay called name has its checkpoint at position last.
func waitRelayed(ctx context.Context, pool *pgxpool.Pool, name string, last int64) error {
	return waitFor(ctx, 5*time.Minute, func() (bool, error) {
		var pos int64
		err := pool.QueryRow(ctx, `SELECT coalesce(max(position), 0) FROM relay_checkpoints WHERE name = $1`, name).Scan(&pos)
		return pos >= last, err
	})
}

// waitApplied waits until projection has applied n events.
func waitApplied(ctx context.Context, pool *pgxpool.Pool, projection string, n int) error {
	return waitFor(ctx, 5*time.Minute, func() (bool, error) {
		var applied int64
		err := pool.QueryRow(ctx, `SELECT coalesce(max(events_applied), 0) FROM projection_positions WHERE projection = $1`,
			projection).Scan(&applied)
		return applied >= int64(n), err
	})
}

// checkCached reports an error unless the accounts projector left n users in the cache
// under prefix.
func checkCached(ctx context.Context, rdb *redis.Client, prefix string, n int) error {
	cached, err := countKeys(ctx, rdb, prefix+"user:*")
	if err != nil {
		return err
	}
	if cached != int64(n) {
		return fmt.Errorf("%d of %d users cached", cached, n)
	}
	return nil
}

// waitFor polls done every 5 ms until it holds, fails, or limit passes.
func waitFor(ctx context.Context, limit time.Duration, done func() (bool, error)) error {
	return measure.Poll(ctx, limit, 5*time.Millisecond, done)
}

// envelopeBodies reads the first n events of the log and encodes them as the relay does.
func envelopeBodies(ctx context.Context, pool *pgxpool.Pool, n int) ([][]byte, error) {
	var bodies [][]byte
	cp := eventstore.Checkpoint{}
	for len(bodies) < n {
		batch, next, err := eventstore.ReadCommitted(ctx, pool, cp, 10000)
		if err != nil {
			return nil, err
		}
		if len(batch) == 0 {
			break
		}
		for _, e := range batch {
			b, err := json.Marshal(e)
			if err != nil {
				return nil, err
			}
			bodies = append(bodies, b)
		}
		cp = next
	}
	return bodies[:min(n, len(bodies))], nil
}

// barePublishRate publishes bodies as the relay does (mandatory, persistent, routed by
// type) with at most window unconfirmed, and returns confirmed messages per second.
func barePublishRate(ctx context.Context, conn *broker.Conn, exchange string, q broker.QueueSpec, bodies [][]byte, window int) (float64, error) {
	ch, err := conn.Channel(ctx)
	if err != nil {
		return 0, err
	}
	defer ch.Close()
	if err := broker.DeclareEventExchange(ch, exchange); err != nil {
		return 0, err
	}
	if err := broker.DeclareQueue(ch, q); err != nil {
		return 0, err
	}
	if err := ch.Confirm(false); err != nil {
		return 0, err
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, window+1))
	outstanding := 0
	await := func() error {
		c, ok := <-confirms
		if !ok {
			return fmt.Errorf("channel closed")
		}
		if !c.Ack {
			return fmt.Errorf("nack %d", c.DeliveryTag)
		}
		outstanding--
		return nil
	}
	start := time.Now()
	for _, b := range bodies {
		for outstanding >= window {
			if err := await(); err != nil {
				return 0, err
			}
		}
		if err := ch.PublishWithContext(ctx, exchange, "user.created", true, false, amqp.Publishing{
			ContentType: "application/json", DeliveryMode: amqp.Persistent, MessageId: uuid.NewString(),
			Type: "user.created", Timestamp: time.Now(), Body: b}); err != nil {
			return 0, err
		}
		outstanding++
	}
	for outstanding > 0 {
		if err := await(); err != nil {
			return 0, err
		}
	}
	return float64(len(bodies)) / time.Since(start).Seconds(), nil
}

// watermillRate publishes bodies through watermill-amqp's publisher with its default
// durable pub/sub configuration (an exchange per topic, fanout), optionally with
// ConfirmDelivery, into a quorum queue bound to that exchange, and returns messages per
// second until the queue holds every one.
func watermillRate(ctx context.Context, url string, conn *broker.Conn, topic string, bodies [][]byte, confirm bool) (float64, error) {
	cfg := wamqp.NewDurablePubSubConfig(url, nil)
	cfg.Publish.ConfirmDelivery = confirm
	pub, err := wamqp.NewPublisher(cfg, watermill.NopLogger{})
	if err != nil {
		return 0, err
	}
	defer pub.Close()
	ch, err := conn.Channel(ctx)
	if err != nil {
		return 0, err
	}
	defer ch.Close()
	// The exchange as watermill declares it, and a queue of the relay's kind bound to it.
	if err := ch.ExchangeDeclare(topic, "fanout", true, false, false, false, nil); err != nil {
		return 0, err
	}
	if _, err := ch.QueueDeclare(topic, true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		return 0, err
	}
	defer func() {
		_, _ = ch.QueueDelete(topic, false, false, false)
		_ = ch.ExchangeDelete(topic, false, false)
	}()
	if err := ch.QueueBind(topic, "", topic, false, nil); err != nil {
		return 0, err
	}
	start := time.Now()
	for _, b := range bodies {
		if err := pub.Publish(topic, message.NewMessage(uuid.NewString(), b)); err != nil {
			return 0, err
		}
	}
	err = waitFor(ctx, 5*time.Minute, func() (bool, error) {
		q, err := ch.QueueDeclarePassive(topic, true, false, false, false, amqp.Table{"x-queue-type": "quorum"})
		return q.Messages >= len(bodies), err
	})
	return float64(len(bodies)) / time.Since(start).Seconds(), err
}

// projectorBatch is serve's largest batch of the projectors, PROJECTOR_BATCH_SIZE's
// default: the projector figures apply batches of it, and their pgbench baseline
// commits as many rows a transaction.
func projectorBatch() int {
	c, _ := config.Load(nil) // the defaults; a bad environment is not the bench's
	return c.ProjectorBatchSize
}

// pgbenchUpsertRates runs pgbench upserting batches of projectorBatch users-shaped rows, one
// client, alone and with a version row of each upserted, twice each in turn, and returns
// the mean rows per second of each.
//
// floorCPU is the processes' shares of the cores while the floor's script ran (the mean
// of its runs).
func pgbenchUpsertRates(ctx context.Context, pool *pgxpool.Pool, dbURL string, d time.Duration) (upsert, versioned float64, floorCPU map[string]float64, err error) {
	if _, err := pool.Exec(ctx, `DROP TABLE IF EXISTS upsert_baseline, upsert_versions;
		CREATE TABLE upsert_baseline (LIKE users INCLUDING ALL);
		CREATE TABLE upsert_versions (LIKE projection_streams INCLUDING ALL);
		CREATE SEQUENCE IF NOT EXISTS upsert_ids`); err != nil {
		return 0, 0, nil, err
	}
	// The ids grow, as serve's UUIDv7 do, and cost less to make than gen_random_uuid's.
	rows := `INSERT INTO upsert_baseline AS u (id, organization_id, name, email, status, roles, version, created_at, updated_at)
  SELECT lpad(to_hex(b.base * 8192 + i), 32, '0')::uuid, '00000000-0000-0000-0000-000000000001', 'Bench User ' || i,
    'user' || i || '@bench.example', 'active', '{member}', 1, now(), now()
  FROM (SELECT nextval('upsert_ids') AS base) AS b, generate_series(1, ` + strconv.Itoa(projectorBatch()) + `) AS i
  ON CONFLICT (id) DO UPDATE SET name = excluded.name, email = excluded.email, version = excluded.version, updated_at = excluded.updated_at`
	scripts := []string{rows + ";\n", `WITH u AS (` + rows + ` RETURNING id, version)
INSERT INTO upsert_versions (projection, stream_id, version) SELECT 'accounts', id, version FROM u
  ON CONFLICT (projection, stream_id) DO UPDATE SET version = excluded.version;
`}
	var sums [2]float64
	floorCPU = map[string]float64{}
	for range 2 {
		for i, script := range scripts {
			var tps float64
			cpu, err := cpuShares(func() (err error) {
				tps, err = pgbench(ctx, dbURL, script, 1, d)
				return err
			})
			if err != nil {
				return 0, 0, nil, err
			}
			sums[i] += tps * float64(projectorBatch())
			if i == 1 {
				for name, share := range cpu {
					floorCPU[name] += share / 2
				}
			}
		}
	}
	return sums[0] / 2, sums[1] / 2, floorCPU, nil
}

// deleteQueues removes the run's queues, their dead-letter queues and its exchanges.
func deleteQueues(conn *broker.Conn, exchange string, qs ...broker.QueueSpec) {
	ch, err := conn.Channel(context.Background())
	if err != nil {
		return
	}
	defer ch.Close()
	for _, q := range qs {
		_, _ = ch.QueueDelete(q.Name, false, false, false)
		_, _ = ch.QueueDelete(q.DeadQueue(), false, false, false)
	}
	_, _ = ch.QueueDelete(exchange+broker.UnroutedSuffix, false, false, false)
	_ = ch.ExchangeDelete(exchange, false, false)
	_ = ch.ExchangeDelete(exchange+broker.UnroutedSuffix, false, false)
	_ = ch.ExchangeDelete(exchange+".dlx", false, false)
	_ = ch.ExchangeDelete(broker.FramesExchange(exchange), false, false)
}

func countKeys(ctx context.Context, rdb *redis.Client, pattern string) (int64, error) {
	var n int64
	iter := rdb.Scan(ctx, 0, pattern, 1000).Iterator()
	for iter.Next(ctx) {
		n++
	}
	return n, iter.Err()
}

func dropKeys(ctx context.Context, rdb *redis.Client, prefix string) {
	iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		if keys = append(keys, iter.Val()); len(keys) == 1000 {
			rdb.Del(ctx, keys...)
			keys = keys[:0]
		}
	}
	if len(keys) > 0 {
		rdb.Del(ctx, keys...)
	}
}

// uuidv7SQL makes a UUIDv7 in SQL (PostgreSQL 15 has no function for it): the
// millisecond clock in the first 48 bits, the version's bits set, the rest random. The
// bench's seeded events take their ids from it, because serve's are UUIDv7 (events,
// aggregates): the indexes on them grow at their ends, where random ids would land on
// random pages and cost every figure more than serve pays.
const uuidv7SQL = `encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) PLACING
	substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3) FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid`
