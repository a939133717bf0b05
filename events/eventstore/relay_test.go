package eventstore

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/broker"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// collector binds a queue to the test exchange and records every delivery in order.
type collector struct {
	mu   sync.Mutex
	got  []events.Envelope
	conn *amqp.Connection
}

func mustCollector(t *testing.T, a *testenv.AMQP) *collector {
	t.Helper()
	conn, ch := a.MustEventChannel(t)
	q := a.Queue("collector")
	_, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-queue-type": "quorum"})
	require.NoError(t, err)
	require.NoError(t, ch.QueueBind(q, "#", a.Exchange, false, nil))
	deliveries, err := ch.Consume(q, "", true, false, false, false, nil)
	require.NoError(t, err)
	c := &collector{conn: conn}
	go func() {
		for d := range deliveries {
			e, err := events.DecodeEnvelope(d.Body)
			if err != nil {
				t.Errorf("bad envelope: %v", err)
				continue
			}
			assert.Equal(t, e.Type, d.RoutingKey)
			assert.Equal(t, events.PartitionValue(events.PartitionBucket(e.OrganizationID)), d.Headers[events.PartitionHeader],
				"the organization's bucket, which partitioned queues are bound by")
			c.mu.Lock()
			c.got = append(c.got, e)
			c.mu.Unlock()
		}
	}()
	return c
}

// firstSeen returns each event id's index of first arrival.
func (c *collector) firstSeen() (map[uuid.UUID]int, []events.Envelope) {
	c.mu.Lock()
	defer c.mu.Unlock()
	idx := map[uuid.UUID]int{}
	var uniq []events.Envelope
	for _, e := range c.got {
		if _, ok := idx[e.ID]; !ok {
			idx[e.ID] = len(uniq)
			uniq = append(uniq, e)
		}
	}
	return idx, uniq
}

func (c *collector) waitFor(t *testing.T, n int) {
	t.Helper()
	testenv.Eventually(t, 20*time.Second, func() error {
		if idx, _ := c.firstSeen(); len(idx) < n {
			return errorf("%d of %d events arrived", len(idx), n)
		}
		return nil
	})
}

func errorf(format string, args ...any) error { return &testError{msg: format, args: args} }

type testError struct {
	msg  string
	args []any
}

func (e *testError) Error() string { b, _ := json.Marshal(e.args); return e.msg + " " + string(b) }

func startRelay(t *testing.T, d testenv.Database, a *testenv.AMQP, conn *broker.Conn, hook func(context.Context, []events.Envelope) error) (*Relay, context.CancelFunc, chan struct{}) {
	t.Helper()
	r, err := NewRelay(d.Pool, conn, RelayConfig{Exchange: a.Exchange, BatchSize: 7, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	r.afterConfirm = hook
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return r, cancel, done
}

func mustBroker(t *testing.T, a *testenv.AMQP) *broker.Conn {
	conn := broker.Dial(a.URL, testenv.Logger(t))
	t.Cleanup(func() { conn.Close() })
	return conn
}

type appended struct {
	id         uuid.UUID
	start, end time.Time
}

// appendDelayed appends one event whose transaction stays open for a random time after
// the insert, so that commits happen out of position order.
func appendDelayed(t *testing.T, s *Store, stream uuid.UUID, maxDelay time.Duration) appended {
	id := uuid.New()
	a := appended{id: id, start: time.Now()}
	org := uuid.New()
	_, err := s.Append(context.Background(), AppendRequest{
		StreamType: events.StreamUser, StreamID: stream, ExpectedVersion: AnyVersion, OrganizationID: &org,
		Events: []events.Event{events.UserRoleAssigned{Role: "member"}}, EventIDs: []uuid.UUID{id},
		Meta: events.Meta{Actor: events.Actor{Type: events.ActorSystem}},
		Also: func(ctx context.Context, tx pgx.Tx) error {
			time.Sleep(time.Duration(rand.Int64N(int64(maxDelay))))
			return nil
		},
	})
	require.NoError(t, err)
	a.end = time.Now()
	return a
}

func TestRelayPublishesEveryEventInCommitOrderUnderConcurrency(t *testing.T) {
	d := testenv.MustDatabase(t)
	a := testenv.MustAMQP(t)
	c := mustCollector(t, a)
	startRelay(t, d, a, mustBroker(t, a), nil)
	s := NewStore(d.Pool)

	const writers, perWriter = 16, 12
	var mu sync.Mutex
	var all []appended
	streams := make([]uuid.UUID, 4)
	for i := range streams {
		streams[i] = uuid.New()
	}
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWriter; i++ {
				ap := appendDelayed(t, s, streams[rand.IntN(len(streams))], 25*time.Millisecond)
				mu.Lock()
				all = append(all, ap)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	c.waitFor(t, writers*perWriter)

	idx, uniq := c.firstSeen()
	require.Len(t, uniq, writers*perWriter)
	for _, ap := range all {
		_, ok := idx[ap.id]
		require.True(t, ok, "event %s never published", ap.id)
	}
	// Within a stream, versions arrive in order.
	last := map[uuid.UUID]int{}
	for _, e := range uniq {
		assert.Equal(t, last[e.StreamID]+1, e.StreamVersion, "stream %s out of order", e.StreamID)
		last[e.StreamID] = e.StreamVersion
	}
	// An append that committed before another began is published before it.
	violations := 0
	for _, x := range all {
		for _, y := range all {
			if x.end.Before(y.start) && idx[x.id] > idx[y.id] {
				violations++
			}
		}
	}
	assert.Zero(t, violations, "events published out of commit order")
}

func TestRelayStoppedBetweenConfirmAndCheckpointLosesNothing(t *testing.T) {
	d := testenv.MustDatabase(t)
	a := testenv.MustAMQP(t)
	c := mustCollector(t, a)
	s := NewStore(d.Pool)
	var ids []uuid.UUID
	for i := 0; i < 30; i++ {
		ids = append(ids, appendDelayed(t, s, uuid.New(), time.Millisecond).id)
	}

	killed := make(chan struct{})
	_, cancel, done := startRelay(t, d, a, mustBroker(t, a), func(ctx context.Context, batch []events.Envelope) error {
		close(killed)
		<-ctx.Done()
		return ctx.Err() // dies before the checkpoint of this batch
	})
	<-killed
	cancel()
	<-done
	time.Sleep(100 * time.Millisecond)

	var cp int64
	require.NoError(t, d.Pool.QueryRow(context.Background(), `SELECT coalesce(max(position),0) FROM relay_checkpoints`).Scan(&cp))
	assert.Zero(t, cp, "the checkpoint of the killed batch must not be saved")

	startRelay(t, d, a, mustBroker(t, a), nil)
	c.waitFor(t, len(ids))
	idx, _ := c.firstSeen()
	for _, id := range ids {
		assert.Contains(t, idx, id)
	}
	c.mu.Lock()
	assert.Greater(t, len(c.got), len(ids), "the first batch is published twice (at least once)")
	c.mu.Unlock()
}

func TestRelayStandbyTakesOverWhenLeaderStops(t *testing.T) {
	d := testenv.MustDatabase(t)
	a := testenv.MustAMQP(t)
	c := mustCollector(t, a)
	s := NewStore(d.Pool)

	leaders := make(chan int, 10)
	newRelay := func(n int) (context.CancelFunc, chan struct{}) {
		r, err := NewRelay(d.Pool, mustBroker(t, a), RelayConfig{Exchange: a.Exchange, Logger: testenv.Logger(t)})
		require.NoError(t, err)
		r.leading = func(on bool) {
			if on {
				leaders <- n
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = r.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		return cancel, done
	}
	cancel1, done1 := newRelay(1)
	require.Equal(t, 1, <-leaders)
	newRelay(2)
	select {
	case n := <-leaders:
		t.Fatalf("relay %d became leader while relay 1 leads", n)
	case <-time.After(1500 * time.Millisecond):
	}
	first := appendDelayed(t, s, uuid.New(), time.Millisecond)
	c.waitFor(t, 1)

	cancel1()
	<-done1
	select {
	case n := <-leaders:
		assert.Equal(t, 2, n)
	case <-time.After(10 * time.Second):
		t.Fatal("standby did not take over")
	}
	second := appendDelayed(t, s, uuid.New(), time.Millisecond)
	c.waitFor(t, 2)
	idx, _ := c.firstSeen()
	assert.Contains(t, idx, first.id)
	assert.Contains(t, idx, second.id)
}

func TestPublisherTreatsUnroutableAsNotSent(t *testing.T) {
	a := testenv.MustAMQP(t)
	conn, err := amqp.Dial(a.URL)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	// A bare exchange with no alternate exchange and no queue bound.
	require.NoError(t, ch.ExchangeDeclare(a.Exchange, amqp.ExchangeTopic, true, false, false, false, nil))
	require.NoError(t, ch.Confirm(false))
	p := testPublisher(ch, a.Exchange, false)
	e := events.Envelope{ID: uuid.New(), Type: "user.created", StreamID: uuid.New(), StreamVersion: 1, Data: json.RawMessage(`{}`)}
	err = p.publish(context.Background(), []events.Envelope{e})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "unroutable")

	q := a.Queue("bound")
	_, err = ch.QueueDeclare(q, true, false, false, false, nil)
	require.NoError(t, err)
	require.NoError(t, ch.QueueBind(q, "user.*", a.Exchange, false, nil))
	require.NoError(t, p.publish(context.Background(), []events.Envelope{e}))
}

func TestRelayDeclaresQueuesBeforePublishing(t *testing.T) {
	d := testenv.MustDatabase(t)
	a := testenv.MustAMQP(t)
	s := NewStore(d.Pool)
	defer s.Close()
	// Events exist before any queue does.
	first := appendDelayed(t, s, uuid.New(), time.Millisecond)
	q := broker.QueueSpec{Name: a.Queue("late"), Exchange: a.Exchange, Bindings: []string{"user.*"}, DeliveryLimit: 3}
	r, err := NewRelay(d.Pool, mustBroker(t, a), RelayConfig{Exchange: a.Exchange, Queues: []broker.QueueSpec{q}, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	defer func() { cancel(); <-done }()

	testenv.Eventually(t, 15*time.Second, func() error {
		// A fresh connection each time: a get on a queue that does not exist yet closes
		// the channel with an error.
		conn, err := amqp.Dial(a.URL)
		if err != nil {
			return err
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			return err
		}
		defer ch.Close()
		msg, ok, err := ch.Get(q.Name, true)
		if err != nil || !ok {
			return errorf("nothing in the queue yet")
		}
		if msg.MessageId != first.id.String() {
			return errorf("unexpected message", msg.MessageId)
		}
		return nil
	})
}

func TestRelayKeepsSeveralBatchesInFlight(t *testing.T) {
	d := testenv.MustDatabase(t)
	a := testenv.MustAMQP(t)
	c := mustCollector(t, a)
	s := NewStore(d.Pool)
	stream := uuid.New()
	const n = 150
	for range n {
		appendDelayed(t, s, stream, time.Microsecond)
	}
	r, err := NewRelay(d.Pool, mustBroker(t, a), RelayConfig{Exchange: a.Exchange, BatchSize: 7, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	var most atomic.Int64
	r.sent = func(outstanding int) {
		if int64(outstanding) > most.Load() {
			most.Store(int64(outstanding))
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	c.waitFor(t, n)
	_, uniq := c.firstSeen()
	for i, e := range uniq {
		require.Equal(t, i+1, e.StreamVersion, "published in order")
	}
	// A batch is sent before the ones before it are confirmed, within the window of two
	// batches (plus the one read when the window still had room).
	assert.Greater(t, most.Load(), int64(7), "never more than one batch in flight")
	assert.LessOrEqual(t, most.Load(), int64(3*7))
	// Once nothing is in flight, the checkpoint is the last event's.
	waitCheckpointAt(t, d, uniq[n-1].Position)
}

// waitCheckpointAt waits until the relay's checkpoint in d is at position.
func waitCheckpointAt(t *testing.T, d testenv.Database, position int64) {
	t.Helper()
	testenv.Eventually(t, 5*time.Second, func() error {
		var cp int64
		if err := d.Pool.QueryRow(context.Background(), `SELECT coalesce(max(position), 0) FROM relay_checkpoints`).Scan(&cp); err != nil {
			return err
		}
		if cp != position {
			return errorf("checkpoint at %d, last event at %d", cp, position)
		}
		return nil
	})
}

// While a batch that was not full is in flight, the relay waits for its confirms before
// it reads again, and then publishes what committed meanwhile as one batch: without a
// backlog, a read at every commit sent the broker one small batch (a write, an fsync
// and a confirm of its quorum queue) for every few events.
func TestRelayWaitsForAPartBatchInFlightBeforeReadingMore(t *testing.T) {
	d := testenv.MustDatabase(t)
	a := testenv.MustAMQP(t)
	c := mustCollector(t, a)
	s := NewStore(d.Pool)
	var mu sync.Mutex
	var outstanding []int // at each batch sent
	first, appended := make(chan struct{}), make(chan struct{})
	proxy := startRelayBehindProxy(t, d.Pool, a, 10, func(n int) {
		mu.Lock()
		outstanding = append(outstanding, n)
		sends := len(outstanding)
		mu.Unlock()
		if sends == 1 { // the test commits two more while this batch's confirm is held back
			close(first)
			select {
			case <-appended:
			case <-time.After(10 * time.Second):
			}
		}
	})
	proxy.Delay(300 * time.Millisecond) // the broker's confirms come late

	stream := uuid.New()
	appendDelayed(t, s, stream, time.Microsecond)
	select {
	case <-first:
	case <-time.After(10 * time.Second):
		t.Fatal("the relay sent nothing")
	}
	appendDelayed(t, s, stream, time.Microsecond)
	appendDelayed(t, s, stream, time.Microsecond)
	close(appended)
	c.waitFor(t, 3)
	_, uniq := c.firstSeen()
	for i, e := range uniq {
		require.Equal(t, i+1, e.StreamVersion, "published in order")
	}
	mu.Lock()
	defer mu.Unlock()
	// The first event alone, then the two that committed while it was in flight, sent
	// together once it was confirmed (reading at once sent them with the first still
	// outstanding: 3).
	assert.Equal(t, []int{1, 2}, outstanding)
}

// While commits keep coming, the relay saves its checkpoint at most every
// checkpointEvery, however many batches are confirmed meanwhile; once it has nothing to
// read and nothing in flight, the checkpoint is the last event's.
func TestRelaySavesItsCheckpointAtMostEvery100msUnderLoad(t *testing.T) {
	d := testenv.MustDatabase(t)
	a := testenv.MustAMQP(t)
	c := mustCollector(t, a)
	s := NewStore(d.Pool)
	pool, traced := testenv.MustTracedPool(t, d.URL)
	var batches atomic.Int64
	proxy := startRelayBehindProxy(t, pool, a, 500, func(int) { batches.Add(1) })
	// Every confirm takes 10 ms or more, and commits come faster: each read after a confirm
	// finds events, and the relay is never idle until the appends stop.
	proxy.Delay(10 * time.Millisecond)
	traced.Reset()
	stream := uuid.New()
	start := time.Now()
	n := 0
	for time.Since(start) < 1500*time.Millisecond {
		appendDelayed(t, s, stream, time.Microsecond)
		n++
	}
	loaded := time.Since(start)
	c.waitFor(t, n)
	saves := len(traced.Matching(regexp.MustCompile(`INSERT INTO relay_checkpoints`)))
	t.Logf("%d events in %d batches over %v; %d checkpoint saves", n, batches.Load(), loaded, saves)
	// One every 100 ms while loaded, one when it idles, and the slack of a slow machine;
	// saved whenever nothing was in flight, it was saved after each of some 30 to 55 batches.
	limit := int(loaded/checkpointEvery) + 6
	assert.LessOrEqual(t, saves, limit)
	require.Greater(t, int(batches.Load()), limit, "too few batches to tell: the machine is too slow for this test")
	_, uniq := c.firstSeen()
	waitCheckpointAt(t, d, uniq[n-1].Position)
}

// Progress confirmed since the last save is saved once the checkpoint is due, even while
// the relay waits for a batch the broker does not confirm (a disk alarm, a stall), not
// when that wait ends.
func TestRelaySavesConfirmedProgressWhileABatchIsStalled(t *testing.T) {
	d := testenv.MustDatabase(t)
	a := testenv.MustAMQP(t)
	mustCollector(t, a)
	s := NewStore(d.Pool)
	stream := uuid.New()
	var mu sync.Mutex
	var positions []int64 // of the events appended, in order
	var stalled time.Time
	var proxy *testenv.Proxy
	var failed error // of an append on the relay's goroutine
	add := func() error {
		res, err := s.Append(context.Background(), AppendRequest{StreamType: events.StreamUser, StreamID: stream,
			ExpectedVersion: AnyVersion, Events: []events.Event{events.UserRoleAssigned{Role: "member"}},
			Meta: events.Meta{Actor: events.Actor{Type: events.ActorSystem}}})
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failed = err
			return err
		}
		positions = append(positions, res.Position)
		return nil
	}
	sends := 0
	proxy = startRelayBehindProxy(t, d.Pool, a, 10, func(int) {
		// On the relay's goroutine, between its publish and its wait for the confirms:
		// the first batch is saved once confirmed, or with the second; the second is
		// confirmed within 100 ms of that save, and the third not for 3 s.
		sends++
		switch sends {
		case 1, 2:
			_ = add()
		case 3:
			proxy.Delay(3 * time.Second)
			mu.Lock()
			stalled = time.Now()
			mu.Unlock()
		}
	})
	require.NoError(t, add())
	testenv.Eventually(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if failed != nil {
			return failed
		}
		if stalled.IsZero() {
			return errorf("the third batch is not sent yet")
		}
		return nil
	})
	mu.Lock()
	second, third, since := positions[1], positions[2], stalled
	mu.Unlock()
	testenv.Eventually(t, 10*time.Second, func() error {
		var cp int64
		if err := d.Pool.QueryRow(context.Background(), `SELECT coalesce(max(position), 0) FROM relay_checkpoints`).Scan(&cp); err != nil {
			return err
		}
		if cp < second {
			return errorf("checkpoint at %d, the second batch's event at %d", cp, second)
		}
		return nil
	})
	waited := time.Since(since)
	var cp int64
	require.NoError(t, d.Pool.QueryRow(context.Background(), `SELECT coalesce(max(position), 0) FROM relay_checkpoints`).Scan(&cp))
	proxy.Delay(0)
	t.Logf("the second batch saved %v after the third was sent; checkpoint %d, third event %d", waited, cp, third)
	// Saved when the checkpoint was due, within 100 ms; waiting for the stalled batch, it
	// was saved with the third's confirm, 3 s later.
	assert.Less(t, waited, 1500*time.Millisecond, "confirmed progress waited for the stalled batch")
}

// startRelayBehindProxy runs a relay on pool whose broker connection goes through a proxy,
// so that the test can hold the broker's answers back; sent is called with the events
// outstanding after each batch it sends. It returns once the relay has found nothing to
// read, with the proxy.
func startRelayBehindProxy(t *testing.T, pool *pgxpool.Pool, a *testenv.AMQP, batchSize int, sent func(outstanding int)) *testenv.Proxy {
	t.Helper()
	proxy := testenv.MustProxy(t, "127.0.0.1:5672")
	conn := broker.Dial("amqp://guest:guest@"+proxy.Addr()+"/", testenv.Logger(t))
	t.Cleanup(func() { conn.Close() })
	r, err := NewRelay(pool, conn, RelayConfig{Exchange: a.Exchange, BatchSize: batchSize, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	ready := make(chan struct{})
	var once sync.Once
	r.idle = func() { once.Do(func() { close(ready) }) }
	r.sent = sent
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("the relay did not start")
	}
	return proxy
}

// testPublisher is a publisher on ch, which is in confirm mode, with room for a few
// confirms and returns.
func testPublisher(ch *amqp.Channel, exchange string, frames bool) *publisher {
	return &publisher{ch: ch, exchange: exchange, frames: frames, timeout: 5 * time.Second,
		confirms: ch.NotifyPublish(make(chan amqp.Confirmation, 4)),
		returns:  ch.NotifyReturn(make(chan amqp.Return, 4)),
		closed:   ch.NotifyClose(make(chan *amqp.Error, 1))}
}

// publish sends one batch and waits for all its confirms.
func (p *publisher) publish(ctx context.Context, batch []events.Envelope) error {
	n, err := p.send(ctx, batch)
	if err != nil {
		return err
	}
	_, err = p.confirm(&inflight{batch: batch, messages: n}, true)
	return err
}

// The relay's idle check walks the commit-order index to the first row after the
// checkpoint, whatever the statistics say and whatever the parameters: the EXISTS it
// replaced was planned, on a log grown since it was last analyzed, as a sequential scan
// of the whole log, on every idle turn.
func TestRelayIdleCheckReadsTheIndexNotTheLog(t *testing.T) {
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	for range 200 { // 20,000 events in 200 transactions
		_, err := d.Pool.Exec(ctx, `INSERT INTO events (id, stream_type, stream_id, stream_version, type, schema_version,
				actor_type, data, occurred_at)
			SELECT gen_random_uuid(), 'user', gen_random_uuid(), 1, 'user.created', 1, 'system', '{}', now()
			FROM generate_series(1, 100)`)
		require.NoError(t, err)
	}
	// No ANALYZE: the log has grown since its statistics were taken, as it does between
	// autovacuum's visits.
	var txid string
	var pos int64
	require.NoError(t, d.Pool.QueryRow(ctx, `SELECT transaction_id::text, position FROM events
		ORDER BY transaction_id DESC, position DESC LIMIT 1`).Scan(&txid, &pos))
	// The relay's connection prepares the statement; after a few runs PostgreSQL may
	// plan it once for any parameters (a generic plan), which is the plan to check.
	tx, err := d.Pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx)
	_, err = tx.Exec(ctx, `SET LOCAL plan_cache_mode = force_generic_plan`)
	require.NoError(t, err)
	plan := testenv.Explain(t, tx, "", behindQuery, txid, pos)
	assert.Contains(t, plan, "events_commit_order_idx", plan)
	assert.NotContains(t, plan, "Seq Scan", plan)
}

// A burst of notifications that arrived while the relay was busy wakes it once, not
// once each: it takes every notification that has arrived when it wakes.
// runUntilIdle runs r until stop is called or the test ends, and returns once r has
// found nothing to read; turns counts the turns that found nothing.
func runUntilIdle(t *testing.T, r *Relay) (turns *atomic.Int64, stop func()) {
	t.Helper()
	turns = new(atomic.Int64)
	r.idle = func() { turns.Add(1) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	testenv.Eventually(t, 5*time.Second, func() error {
		if turns.Load() == 0 {
			return errorf("the relay has not gone idle yet")
		}
		return nil
	})
	return turns, stop
}

func TestRelayTakesABurstOfNotificationsInFewTurns(t *testing.T) {
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	a := testenv.MustAMQP(t)
	c := mustCollector(t, a)
	r, err := NewRelay(d.Pool, mustBroker(t, a), RelayConfig{Exchange: a.Exchange, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	turns, _ := runUntilIdle(t, r)

	// 300 notifications that arrive together, as a burst sent while the relay was busy
	// does: one transaction, each with a payload of its own (PostgreSQL folds only a
	// transaction's identical notifications).
	const burst = 300
	before := turns.Load()
	_, err = d.Pool.Exec(ctx, `SELECT pg_notify($1, g::text) FROM generate_series(1, $2::int) AS g`, NotifyChannel, burst)
	require.NoError(t, err)
	time.Sleep(500 * time.Millisecond) // the relay takes what has come
	took := turns.Load() - before
	assert.Less(t, took, int64(burst/3), "%d turns for %d notifications", took, burst)

	// And it still relays.
	appendDelayed(t, NewStore(d.Pool), uuid.New(), time.Microsecond)
	c.waitFor(t, 1)
}

// While the relay of the appending process leads, its store's commits wake it directly
// and send no NOTIFY (every LISTENing connection of the database is signalled for each
// one, whatever its channel); the relay then relays at once although it would otherwise
// sleep an hour. Once it stops leading, the store notifies again.
func TestRelayOfTheAppendingProcessIsWokenWithoutNotify(t *testing.T) {
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	a := testenv.MustAMQP(t)
	c := mustCollector(t, a)
	store := NewStore(d.Pool)
	t.Cleanup(store.Close)
	listener, err := pgx.Connect(ctx, d.URL)
	require.NoError(t, err)
	t.Cleanup(func() { listener.Close(context.Background()) })
	_, err = listener.Exec(ctx, "LISTEN "+pgx.Identifier{NotifyChannel}.Sanitize())
	require.NoError(t, err)
	heard := func(within time.Duration) bool {
		wctx, cancel := context.WithTimeout(ctx, within)
		defer cancel()
		n, err := listener.WaitForNotification(wctx)
		return err == nil && n != nil
	}

	r, err := NewRelay(d.Pool, mustBroker(t, a), RelayConfig{Exchange: a.Exchange, IdleWait: time.Hour, Local: store, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	_, stop := runUntilIdle(t, r)
	for i := range 3 {
		appendDelayed(t, store, uuid.New(), time.Microsecond)
		c.waitFor(t, i+1)
	}
	assert.False(t, heard(300*time.Millisecond), "no NOTIFY while the relay of this process leads")

	stop()
	appendDelayed(t, store, uuid.New(), time.Microsecond)
	assert.True(t, heard(5*time.Second), "a NOTIFY once it has stopped")
}

// With Frames, the relay publishes each batch's events of a bucket in frames of at most
// events.FrameMax, in the order of the log, mandatory, to the frames exchange; the
// single events go to whichever queue wants them, and one that no queue wants holds
// nothing up. A frame that no queue takes fails its batch.
func TestRelayPublishesFramesOfABucket(t *testing.T) {
	d := testenv.MustDatabase(t)
	a := testenv.MustAMQP(t)
	s := NewStore(d.Pool)
	defer s.Close()
	orgA := uuid.New()
	orgB := uuid.New()
	for events.PartitionBucket(&orgB) == events.PartitionBucket(&orgA) {
		orgB = uuid.New()
	}
	var want []uuid.UUID
	for i := range events.FrameMax + 20 { // a's: 72, b's: 12
		org := &orgA
		if i%7 == 3 {
			org = &orgB
		}
		id := uuid.New()
		_, err := s.Append(context.Background(), AppendRequest{StreamType: events.StreamUser, StreamID: uuid.New(),
			ExpectedVersion: AnyVersion, OrganizationID: org, Events: []events.Event{events.UserRoleAssigned{Role: "member"}},
			EventIDs: []uuid.UUID{id}, Meta: events.Meta{Actor: events.Actor{Type: events.ActorSystem}}})
		require.NoError(t, err)
		want = append(want, id)
	}
	group := broker.QueueSpec{Name: a.Queue("group"), Exchange: a.Exchange, Bindings: []string{"user.*"}, DeliveryLimit: 3, Frames: true}
	// A reactor's queue that wants none of these events: their single copies are routed
	// nowhere, and the relay goes on.
	other := broker.QueueSpec{Name: a.Queue("other"), Exchange: a.Exchange, Bindings: []string{"nothing.*"}, DeliveryLimit: 3}
	// The group's queue is declared here as the relay declares it, so that no get finds
	// it missing: that closes the channel, and a channel opened again at once may take the
	// id the broker is still closing, which closes the whole connection.
	_, ch := a.MustEventChannel(t)
	require.NoError(t, broker.DeclareQueue(ch, group))
	r, err := NewRelay(d.Pool, mustBroker(t, a), RelayConfig{Exchange: a.Exchange, Frames: true, Queues: []broker.QueueSpec{group, other},
		Logger: testenv.Logger(t)})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	defer func() { cancel(); <-done }()

	var got []uuid.UUID
	byBucket := map[string][]int64{}
	frames := 0
	testenv.Eventually(t, 15*time.Second, func() error {
		for {
			m, ok, err := ch.Get(group.Name, true)
			if err != nil {
				return err
			}
			if !ok {
				break
			}
			frames++
			envs, err := events.DecodeFrame(m.Body)
			if err != nil {
				return err
			}
			if n, _ := m.Headers[broker.FrameHeader].(int32); int(n) != len(envs) || n > events.FrameMax {
				return errorf("a frame of %d events says %v", len(envs), m.Headers[broker.FrameHeader])
			}
			if m.MessageId != "frame:"+envs[0].ID.String() {
				return errorf("a frame named after another event than its first", m.MessageId)
			}
			bucket, _ := m.Headers[events.PartitionHeader].(string)
			for _, e := range envs {
				if events.PartitionValue(events.PartitionBucket(e.OrganizationID)) != bucket {
					return errorf("event of another bucket in the frame of bucket", bucket)
				}
				got = append(got, e.ID)
				byBucket[bucket] = append(byBucket[bucket], e.Position)
			}
		}
		if len(got) < len(want) {
			return errorf("frames held events", len(got))
		}
		return nil
	})
	assert.ElementsMatch(t, want, got, "every event once, in a frame")
	assert.Equal(t, 3, frames, "a's events in two frames (FrameMax, and the rest), b's in one")
	for b, positions := range byBucket {
		assert.IsIncreasing(t, positions, "bucket %s: in the order of the log", b)
	}
	q, err := ch.QueueDeclarePassive(other.Name, true, false, false, false, nil)
	require.NoError(t, err)
	assert.Zero(t, q.Messages)
	testenv.Eventually(t, 5*time.Second, func() error {
		var cp int64
		if err := d.Pool.QueryRow(ctx, `SELECT coalesce(max(position), 0) FROM relay_checkpoints`).Scan(&cp); err != nil {
			return err
		}
		if cp == 0 {
			return errorf("no checkpoint yet")
		}
		return nil
	})

	// A frame no queue takes fails its batch; once a queue takes frames, it goes.
	x := testenv.MustAMQP(t)
	require.NoError(t, broker.DeclareEventExchange(ch, x.Exchange))
	require.NoError(t, ch.Confirm(false))
	p := testPublisher(ch, x.Exchange, true)
	e := events.Envelope{ID: uuid.New(), Type: "user.created", StreamID: uuid.New(), StreamVersion: 1, Data: json.RawMessage(`{}`)}
	err = p.publish(context.Background(), []events.Envelope{e})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "unroutable")
	require.NoError(t, broker.DeclareQueue(ch, broker.QueueSpec{Name: x.Queue("group"), Exchange: x.Exchange, DeliveryLimit: 3, Frames: true}))
	require.NoError(t, p.publish(context.Background(), []events.Envelope{e}), "the single copy needs no queue")
}
