package projections_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/broker"
	"github.com/chatbotsaas/chatbotd/internal/cache"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
	"github.com/chatbotsaas/chatbotd/projections"
	"github.com/chatbotsaas/chatbotd/projections/reactors"
)

var system = events.Meta{Actor: events.Actor{Type: events.ActorSystem}}

// history appends a realistic history to the store: an organization, users created,
// renamed, re-roled, deactivated, deleted, and sessions started, refreshed and revoked.
func history(t *testing.T, s *eventstore.Store) []events.Envelope {
	t.Helper()
	ctx := context.Background()
	org := uuid.New()
	must := func(stype string, id uuid.UUID, evs ...events.Event) {
		_, err := s.Append(ctx, eventstore.AppendRequest{StreamType: stype, StreamID: id, ExpectedVersion: eventstore.AnyVersion,
			OrganizationID: &org, Events: evs, Meta: system})
		require.NoError(t, err)
	}
	must(events.StreamOrganization, org, events.OrganizationCreated{Name: "Acme", Slug: "acme", Status: "active"})
	must(events.StreamOrganization, org, events.OrganizationUpdated{Changes: map[string]events.Change{"name": {Old: "Acme", New: "Acme Inc"}}})
	for i := 0; i < 12; i++ {
		u := uuid.New()
		must(events.StreamUser, u, events.UserCreated{Name: fmt.Sprint("user ", i), Email: fmt.Sprintf("u%d@example.com", i), Roles: []string{"member"}, Status: "active"})
		must(events.StreamUser, u, events.UserRoleAssigned{Role: "admin"}, events.UserUpdated{Changes: map[string]events.Change{"name": {Old: "x", New: fmt.Sprint("renamed ", i)}}})
		if i%3 == 0 {
			must(events.StreamUser, u, events.UserRoleRemoved{Role: "member"}, events.UserDeactivated{})
		}
		if i%4 == 0 {
			must(events.StreamUser, u, events.UserReactivated{}, events.UserDeleted{})
		}
		sess := uuid.New()
		must(events.StreamSession, sess, events.SessionStarted{UserID: u.String(), ExpiresAt: "2030-01-01T00:00:00Z"})
		must(events.StreamSession, sess, events.SessionRefreshed{Generation: 2})
		if i%2 == 0 {
			must(events.StreamSession, sess, events.SessionReuseDetected{PresentedGeneration: 1, CurrentGeneration: 2}, events.SessionRevoked{Reason: "refresh_token_reuse"})
		}
	}
	all, _, err := eventstore.ReadCommitted(ctx, s.Pool(), eventstore.Checkpoint{}, 100000)
	require.NoError(t, err)
	return all
}

// dump renders the read models so two databases can be compared.
func dump(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var out string
	for _, q := range []string{
		`SELECT json_agg(o ORDER BY id) FROM organizations o`,
		`SELECT json_agg(u ORDER BY id) FROM users u`,
		`SELECT json_agg(s ORDER BY id) FROM sessions s`,
		`SELECT json_agg(p ORDER BY stream_id) FROM projection_streams p`,
	} {
		var s *string
		require.NoError(t, pool.QueryRow(context.Background(), q).Scan(&s))
		if s != nil {
			out += *s + "\n"
		}
	}
	return out
}

func TestAccountsDuplicatedShuffledDeliveryEqualsOrderly(t *testing.T) {
	ctx := context.Background()
	orderly := testenv.MustDatabase(t)
	all := history(t, eventstore.NewStore(orderly.Pool))
	p := projections.NewAccounts(orderly.Pool, nil, nil)
	_, err := projections.ApplyBatch(ctx, orderly.Pool, p, all)
	require.NoError(t, err)
	want := dump(t, orderly.Pool)

	// The same history in a second database, delivered twice over and shuffled, in
	// batches of random size.
	messy := testenv.MustDatabase(t)
	_, err = messy.Pool.Exec(ctx, `ALTER TABLE events DISABLE TRIGGER events_no_update`)
	require.NoError(t, err)
	copyEvents(t, orderly.Pool, messy.Pool)
	deliveries := append(append([]events.Envelope{}, all...), all...)
	rand.Shuffle(len(deliveries), func(i, j int) { deliveries[i], deliveries[j] = deliveries[j], deliveries[i] })
	pm := projections.NewAccounts(messy.Pool, nil, nil)
	applied := 0
	for len(deliveries) > 0 {
		n := min(len(deliveries), 1+rand.IntN(9))
		got, err := projections.ApplyBatch(ctx, messy.Pool, pm, deliveries[:n])
		require.NoError(t, err)
		applied += len(got)
		deliveries = deliveries[n:]
	}
	assert.Equal(t, len(all), applied, "every event applied exactly once")
	assert.Equal(t, want, dump(t, messy.Pool))
}

func copyEvents(t *testing.T, from, to *pgxpool.Pool) {
	t.Helper()
	ctx := context.Background()
	rows, err := from.Query(ctx, `SELECT id, stream_type, stream_id, stream_version, type, schema_version,
		organization_id, actor_type, actor_id, data, occurred_at FROM events ORDER BY position`)
	require.NoError(t, err)
	vals, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([]any, error) { return r.Values() })
	require.NoError(t, err)
	for _, v := range vals {
		_, err := to.Exec(ctx, `INSERT INTO events (id, stream_type, stream_id, stream_version, type, schema_version,
			organization_id, actor_type, actor_id, data, occurred_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)`, v...)
		require.NoError(t, err)
	}
}

// failing wraps Accounts and fails on one event id, always.
type failing struct {
	*projections.Accounts
	poison uuid.UUID
	calls  atomic.Int32
}

func (f *failing) Apply(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
	if e.ID == f.poison {
		f.calls.Add(1)
		return fmt.Errorf("poison")
	}
	return f.Accounts.Apply(ctx, tx, e)
}

// ApplySet goes through the Apply above, one event at a time.
func (f *failing) ApplySet(ctx context.Context, tx pgx.Tx, envs []events.Envelope) error {
	return eachApply(ctx, tx, envs, f.Apply)
}

// eachApply applies envs one at a time: a test's wrapper that changes Apply hides the
// wrapped projector's ApplySet with it.
func eachApply(ctx context.Context, tx pgx.Tx, envs []events.Envelope, apply func(context.Context, pgx.Tx, events.Envelope) error) error {
	for _, e := range envs {
		if err := apply(ctx, tx, e); err != nil {
			return err
		}
	}
	return nil
}

func TestRunnerThroughRabbitMQDeadLettersPoisonAndKeepsFlowing(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := testenv.MustDatabase(t)
	r := testenv.MustRedis(t)
	a := testenv.MustAMQP(t)
	a.Queue(projections.AccountsName)
	store := eventstore.NewStore(d.Pool)
	conn := broker.Dial(a.URL, testenv.Logger(t))
	defer conn.Close()

	org, poisonUser, okUser := uuid.New(), uuid.New(), uuid.New()
	poisonID := uuid.New()
	c := cache.New(r.Client, r.Prefix, time.Minute)
	p := &failing{Accounts: projections.NewAccounts(d.Pool, c, testenv.Logger(t)), poison: poisonID}
	runner, err := projections.NewRunner(d.Pool, conn, p, projections.Config{
		Exchange: a.Exchange, QueuePrefix: a.QueuePrefix, Logger: testenv.Logger(t), Attempts: 2})
	require.NoError(t, err)
	relay, err := eventstore.NewRelay(d.Pool, conn, eventstore.RelayConfig{Exchange: a.Exchange, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	go runner.Run(ctx)
	go relay.Run(ctx)
	// The queue must be bound before events are published, or they go to the unrouted
	// queue. The runner binds before it consumes, so a consumer means the bindings exist.
	a.WaitConsumer(runner.Queue().Name)

	appendOne := func(stream uuid.UUID, id uuid.UUID, ev events.Event) {
		_, err := store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamUser, StreamID: stream,
			ExpectedVersion: eventstore.AnyVersion, OrganizationID: &org, Events: []events.Event{ev},
			EventIDs: []uuid.UUID{id}, Meta: system})
		require.NoError(t, err)
	}
	appendOne(poisonUser, poisonID, events.UserCreated{Name: "Poison", Email: "p@example.com", Status: "active", Roles: []string{}})
	appendOne(okUser, uuid.New(), events.UserCreated{Name: "Fine", Email: "f@example.com", Status: "active", Roles: []string{"member"}})
	appendOne(okUser, uuid.New(), events.UserUpdated{Changes: map[string]events.Change{"name": {Old: "Fine", New: "Finer"}}})

	testenv.Eventually(t, 15*time.Second, func() error {
		e, err := c.Get(ctx, c.Key("user", okUser.String()))
		if err != nil {
			return err
		}
		var u struct{ Name string }
		if err := json.Unmarshal(e.Payload, &u); err != nil || u.Name != "Finer" || e.Version != 2 {
			return fmt.Errorf("cached %q v%d", e.Payload, e.Version)
		}
		return nil
	})
	// The poison event is in the dead-letter queue, after bounded attempts.
	testenv.Eventually(t, 15*time.Second, func() error {
		ch, err := conn.Channel(ctx)
		if err != nil {
			return err
		}
		defer ch.Close()
		msg, ok, err := ch.Get(runner.Queue().DeadQueue(), true)
		if err != nil || !ok {
			return fmt.Errorf("dead-letter queue empty (%v)", err)
		}
		assert.Equal(t, poisonID.String(), msg.MessageId)
		return nil
	})
	assert.LessOrEqual(t, p.calls.Load(), int32(4), "bounded attempts")
	var n int
	require.NoError(t, d.Pool.QueryRow(ctx, `SELECT count(*) FROM users WHERE id = $1`, poisonUser).Scan(&n))
	assert.Zero(t, n)
}

// failingWrite is a rebuildable projector whose write for one event fails in PostgreSQL,
// not in Go: its live batches are pipelined, so the error comes back at the flush.
type failingWrite struct {
	*projections.Accounts
	poison uuid.UUID
}

func (f *failingWrite) Apply(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
	if e.ID == f.poison {
		_, err := tx.Exec(ctx, `SELECT 1 / 0`)
		return err // nil while queued: the statement has not run yet
	}
	return f.Accounts.Apply(ctx, tx, e)
}

func (f *failingWrite) ApplySet(ctx context.Context, tx pgx.Tx, envs []events.Envelope) error {
	return eachApply(ctx, tx, envs, f.Apply)
}

// TestPipelinedBatchFailingAtTheFlushLeavesNothingApplied: a write that fails when the
// pipelined batch is sent undoes the whole batch (no read-model row, no stream version,
// no position), and the same events without it then apply.
func TestPipelinedBatchFailingAtTheFlushLeavesNothingApplied(t *testing.T) {
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	store := eventstore.NewStore(d.Pool)
	org := uuid.New()
	var envs []events.Envelope
	for i := range 3 {
		res, err := store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamUser, StreamID: uuid.New(),
			OrganizationID: &org, Meta: system, Events: []events.Event{
				events.UserCreated{Name: fmt.Sprintf("User %d", i), Email: fmt.Sprintf("u%d@example.com", i), Status: "active", Roles: []string{}}}})
		require.NoError(t, err)
		got, err := eventstore.ReadStream(ctx, d.Pool, res.StreamID, 1, 1)
		require.NoError(t, err)
		envs = append(envs, got...)
	}
	p := &failingWrite{Accounts: projections.NewAccounts(d.Pool, nil, nil), poison: envs[1].ID}
	_, err := projections.ApplyBatch(ctx, d.Pool, p, envs)
	require.Error(t, err, "the failure at the flush fails the batch")

	var users, streams, positions int
	require.NoError(t, d.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM projection_streams),
		(SELECT count(*) FROM projection_positions)`).Scan(&users, &streams, &positions))
	assert.Equal(t, [3]int{0, 0, 0}, [3]int{users, streams, positions}, "nothing of the batch is left")

	applied, err := projections.ApplyBatch(ctx, d.Pool, p, []events.Envelope{envs[0], envs[2]})
	require.NoError(t, err)
	assert.Len(t, applied, 2)
	require.NoError(t, d.Pool.QueryRow(ctx, `SELECT count(*) FROM users`).Scan(&users))
	assert.Equal(t, 2, users)
}

// Users whose cache entries could not be written while Redis was down are recorded, and
// rewritten once it is back: no stale entry waits for its TTL. With the database down
// too, the after-commit work fails, so the batch comes back.
func TestCacheWritesThatFailAreRecordedAndRepaired(t *testing.T) {
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	r := testenv.MustRedis(t)
	store := eventstore.NewStore(d.Pool)
	history(t, store)
	all := readableLog(t, d.Pool)
	live := cache.New(r.Client, r.Prefix, time.Minute)
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	defer dead.Close()
	down := cache.New(dead, r.Prefix, time.Minute)

	// The history is cached; then every user is renamed while Redis is down.
	up := projections.NewAccounts(d.Pool, live, testenv.Logger(t))
	_, err := projections.ApplyBatch(ctx, d.Pool, up, all)
	require.NoError(t, err)
	require.NoError(t, up.AfterCommit(ctx, all))
	users := map[uuid.UUID]bool{}
	for _, e := range all {
		if e.StreamType == events.StreamUser {
			users[e.StreamID] = true
		}
	}
	for id := range users {
		_, err := store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamUser, StreamID: id, ExpectedVersion: eventstore.AnyVersion,
			OrganizationID: all[0].OrganizationID, Events: []events.Event{events.UserUpdated{Changes: map[string]events.Change{"name": {Old: "x", New: "during the outage"}}}}, Meta: system})
		require.NoError(t, err)
	}
	renames := readableLog(t, d.Pool)[len(all):]
	require.Len(t, renames, len(users))
	outage := projections.NewAccounts(d.Pool, down, testenv.Logger(t))
	_, err = projections.ApplyBatch(ctx, d.Pool, outage, renames)
	require.NoError(t, err)
	require.NoError(t, outage.AfterCommit(ctx, renames), "recorded for repair, not failed")
	stale := func() (n int) {
		for id := range users {
			want, err := readmodel.UserEntry(ctx, d.Pool, id)
			require.NoError(t, err)
			got, err := live.Get(ctx, live.Key("user", id.String()))
			if errors.Is(err, cache.ErrMiss) {
				continue
			}
			require.NoError(t, err)
			if got.Version != want.Version || string(got.Payload) != string(want.Payload) {
				n++
			}
		}
		return n
	}
	require.Equal(t, len(users), stale(), "the outage left entries older than the read model")
	var recorded int
	require.NoError(t, d.Pool.QueryRow(ctx, `SELECT count(*) FROM cache_repairs`).Scan(&recorded))
	assert.Positive(t, recorded)

	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go up.RepairCache(rctx, 20*time.Millisecond)
	testenv.Eventually(t, 10*time.Second, func() error {
		var left int
		if err := d.Pool.QueryRow(ctx, `SELECT count(*) FROM cache_repairs`).Scan(&left); err != nil || left > 0 {
			return fmt.Errorf("%d repairs left (%v)", left, err)
		}
		return nil
	})
	assert.Zero(t, stale(), "every entry equals the read model")

	// Redis and PostgreSQL both down: the work cannot be recorded, so it fails.
	gone, err := pgxpool.New(ctx, "postgres://postgres@127.0.0.1:1/none?connect_timeout=1")
	require.NoError(t, err)
	defer gone.Close()
	assert.Error(t, projections.NewAccounts(gone, down, testenv.Logger(t)).AfterCommit(ctx, renames))
}

// While PostgreSQL is down, a projector holds its batch and tries again instead of giving
// the deliveries back: an outage longer than the delivery limit's worth of redeliveries
// dead-letters nothing, and everything applies once the database is back.
func TestRunnerHoldsItsBatchWhileTheDatabaseIsDown(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := testenv.MustDatabase(t)
	a := testenv.MustAMQP(t)
	a.Queue(projections.AccountsName)
	pg := testenv.MustProxy(t, "127.0.0.1:5432")
	cfg, err := pgxpool.ParseConfig(d.URL)
	require.NoError(t, err)
	cfg.ConnConfig.Host, cfg.ConnConfig.Port = "127.0.0.1", mustPort(t, pg.Addr())
	cfg.ConnConfig.ConnectTimeout = time.Second
	viaProxy, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer viaProxy.Close()
	conn := broker.Dial(a.URL, testenv.Logger(t))
	defer conn.Close()

	runner, err := projections.NewRunner(viaProxy, conn, projections.NewAccounts(viaProxy, nil, testenv.Logger(t)), projections.Config{
		Exchange: a.Exchange, QueuePrefix: a.QueuePrefix, Logger: testenv.Logger(t), DeliveryLimit: 2})
	require.NoError(t, err)
	relay, err := eventstore.NewRelay(d.Pool, conn, eventstore.RelayConfig{Exchange: a.Exchange, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	go runner.Run(ctx)
	a.WaitConsumer(runner.Queue().Name)
	go relay.Run(ctx)

	pg.Cut()
	store := eventstore.NewStore(d.Pool)
	org := uuid.New()
	var users []uuid.UUID
	for i := range 5 {
		u := uuid.New()
		users = append(users, u)
		_, err := store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamUser, StreamID: u, OrganizationID: &org, Meta: system,
			Events: []events.Event{events.UserCreated{Name: fmt.Sprint("user ", i), Email: fmt.Sprintf("u%d@example.com", i), Roles: []string{"member"}, Status: "active"}}})
		require.NoError(t, err)
	}
	// Long enough for several attempts: more than the delivery limit (2) of redeliveries.
	time.Sleep(4 * time.Second)
	pg.Restore()
	testenv.Eventually(t, 20*time.Second, func() error {
		var n int
		if err := d.Pool.QueryRow(ctx, `SELECT count(*) FROM users WHERE id = ANY($1)`, users).Scan(&n); err != nil || n != 5 {
			return fmt.Errorf("%d of 5 users projected (%v)", n, err)
		}
		return nil
	})
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(runner.Queue().DeadQueue(), true, false, false, false, amqp.Table{"x-queue-type": "quorum"})
	require.NoError(t, err)
	assert.Zero(t, q.Messages, "nothing dead-lettered by the outage")
}

func mustPort(t *testing.T, addr string) uint16 {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	p, err := strconv.Atoi(port)
	require.NoError(t, err)
	return uint16(p)
}

// Only the responder, whose messages are independent streams, takes competing consumers.
func TestOnlyIndependentProjectorsShareTheirQueueActively(t *testing.T) {
	for _, c := range []struct {
		p   projections.Projector
		sac bool
	}{{reactors.Responder{}, false}, {projections.Chatbots{}, true}, {projections.Audit{}, true},
		{projections.Conversations{}, true}, {projections.NewAccounts(nil, nil, nil), true}, {reactors.Trainer{}, true}} {
		r, err := projections.NewRunner(nil, nil, c.p, projections.Config{Exchange: "x"})
		require.NoError(t, err)
		assert.Equal(t, c.sac, r.Queue().SingleActiveConsumer, c.p.Name())
	}
}

// readableLog reads the whole log in commit order once all of it is readable: the log is
// read below the cluster's oldest running transaction, so under parallel tests the last
// events may take a moment.
func readableLog(t *testing.T, pool *pgxpool.Pool) []events.Envelope {
	t.Helper()
	ctx := context.Background()
	var all []events.Envelope
	testenv.Eventually(t, 30*time.Second, func() error {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&n); err != nil {
			return err
		}
		var err error
		if all, _, err = eventstore.ReadCommitted(ctx, pool, eventstore.Checkpoint{}, 100000); err == nil && len(all) != n {
			err = fmt.Errorf("%d of %d events readable", len(all), n)
		}
		return err
	})
	return all
}

// A user whose last event in a committed batch is a user.created that the batch applied
// is cached as that event wrote the row: the very bytes its read-back gives, whatever its
// name, email and roles hold, and without reading it back (the rows are changed behind
// the projector's back before its after-commit work, and these entries keep what the
// batch wrote). A user changed again in the same batch, and one whose user.created comes
// again after an earlier batch applied it (and a later one renamed the user), are read
// back.
func TestNewUsersAreCachedAsTheirEventsWroteThem(t *testing.T) {
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	r := testenv.MustRedis(t)
	store := eventstore.NewStore(d.Pool)
	c := cache.New(r.Client, r.Prefix, time.Minute)
	accounts := projections.NewAccounts(d.Pool, c, testenv.Logger(t))
	org := uuid.New()
	appendUser := func(id uuid.UUID, evs ...events.Event) {
		_, err := store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamUser, StreamID: id,
			ExpectedVersion: eventstore.AnyVersion, OrganizationID: &org, Meta: system, Events: evs})
		require.NoError(t, err)
	}
	applyAndCache := func(batch []events.Envelope) {
		applied, err := projections.ApplyBatch(ctx, d.Pool, accounts, batch)
		require.NoError(t, err)
		require.NoError(t, accounts.AfterApplied(ctx, batch, applied))
	}
	key := func(id uuid.UUID) string { return c.Key("user", id.String()) }

	// Created and cached; then renamed by a batch whose after-commit work was lost, and its
	// entry evicted.
	earlier := uuid.New()
	appendUser(earlier, events.UserCreated{Name: "Earlier", Email: "earlier@example.com", Roles: []string{"member"}, Status: "active"})
	created := readableLog(t, d.Pool)
	applyAndCache(created)
	appendUser(earlier, events.UserUpdated{Changes: map[string]events.Change{"name": {Old: "Earlier", New: "Renamed"}}})
	renamed := readableLog(t, d.Pool)[len(created):]
	_, err := projections.ApplyBatch(ctx, d.Pool, accounts, renamed)
	require.NoError(t, err)
	require.NoError(t, r.Client.Del(ctx, key(earlier)).Err())

	fresh := map[uuid.UUID]events.UserCreated{}
	for _, u := range []events.UserCreated{
		{Name: `Zoë "Q" <b>&amp;</b> 日本語`, Email: "Mixed.Case+tag@Example.COM", Roles: []string{}, Status: "active"},
		{Name: `back\slash, comma {brace}`, Email: "b@example.com", Roles: []string{"owner", `a"b\c`, "NULL", ",", "{x}", ""}, Status: "invited"},
		{Name: "\u2028 separator \t tab \u00a0", Email: "c@example.com", Roles: []string{"member", "member"}, Status: "deactivated"},
	} {
		id := uuid.New()
		appendUser(id, u)
		fresh[id] = u
	}
	changed := uuid.New()
	appendUser(changed, events.UserCreated{Name: "Before", Email: "changed@example.com", Roles: []string{"member"}, Status: "active"},
		events.UserUpdated{Changes: map[string]events.Change{"name": {Old: "Before", New: "Changed in the same batch"}}})
	batch := append([]events.Envelope{created[0]}, readableLog(t, d.Pool)[len(created)+len(renamed):]...)

	applied, err := projections.ApplyBatch(ctx, d.Pool, accounts, batch)
	require.NoError(t, err)
	require.Len(t, applied, len(batch)-1, "the earlier user's user.created is skipped")
	ids := []uuid.UUID{earlier, changed}
	for id := range fresh {
		ids = append(ids, id)
	}
	written, err := readmodel.UserEntries(ctx, d.Pool, ids)
	require.NoError(t, err)
	_, err = d.Pool.Exec(ctx, `UPDATE users SET name = name || ' (changed after the commit)'`)
	require.NoError(t, err)
	now, err := readmodel.UserEntries(ctx, d.Pool, ids)
	require.NoError(t, err)
	require.NoError(t, accounts.AfterApplied(ctx, batch, applied))

	cached := func(id uuid.UUID) cache.Entry {
		e, err := c.Get(ctx, key(id))
		require.NoError(t, err, "user %s cached", id)
		return e
	}
	for id, u := range fresh {
		got := cached(id)
		assert.Equal(t, 1, got.Version)
		assert.Equal(t, string(written[id].Payload), string(got.Payload), "%q: the bytes of the row as the batch wrote it", u.Name)
		var back readmodel.User
		require.NoError(t, json.Unmarshal(got.Payload, &back))
		assert.Equal(t, u.Roles, back.Roles)
	}
	for id, version := range map[uuid.UUID]int{earlier: 2, changed: 2} {
		got := cached(id)
		assert.Equal(t, version, got.Version)
		assert.Equal(t, string(now[id].Payload), string(got.Payload), "read back")
		assert.Contains(t, string(got.Payload), "(changed after the commit)")
	}
}
