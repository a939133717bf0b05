package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/db"
	"github.com/chatbotsaas/chatbotd/internal/metrics"
)

// Sweep checks, long after the relay published a stretch of the log, that every consumer
// on the projector runtime has applied each event of it that it binds (and, with
// WebhookResponder, that the webhook responder answered each message left to it), and
// publishes what one has not to that consumer's queue again.
//
// Why: the runtime applies what the broker delivers, and repairs a gap in a stream only
// when a later version of it comes (applyInOrder). A message the broker loses after it
// confirmed it never comes, and when it carried the last version of its stream nothing
// shows that it is missing. RabbitMQ does lose such messages: make chaos's
// rabbitmq-node-kill saw RabbitMQ 3.10 confirm frames and never deliver them when the
// node that led every quorum queue was killed (BENCHMARKS.md); a quorum queue
// dead-letters at most once, so a message over its delivery limit whose dead-letter queue
// has no leader at that moment is dropped; an operator may purge a queue. The log is the
// source of truth: the sweep compares each consumer's stream versions
// (projection_streams) with it.
//
// A stretch is checked once, an Interval after the relay's checkpoint passed it, once
// what the consumer has not applied of it can only be lost, not on its way (see look):
// either the consumer's single active consumer has applied an event published after the
// stretch, and so everything the queue delivered before it; or its queues have nothing
// waiting and it applies nothing more for a Grace. (A consumer that holds deliveries and
// applies nothing for a whole Grace, stalled, has them published again too: the copies
// are skipped as applied.)
//
// What the sweep publishes goes to the consumer's queue alone (eventstore.Redrive), in
// frames for the group, and is applied as any delivery: skipped by the members that have
// it, dead-lettered when it is poison. It publishes every event of a stream that is
// missing one, from the stretch's start, so that the stream's order holds.
//
// One process sweeps a consumer at a time (an advisory lock). A pass that fails, or that
// finds messages waiting, is tried again later; where a pass has got to is recorded page
// by page in projection_sweeps.
type Sweep struct {
	Pool    *pgxpool.Pool
	Broker  eventstore.Channeler
	Runners []*Runner
	// WebhookResponder, when set, is swept too (see WebhookSweep).
	WebhookResponder *WebhookSweep
	// Relay is the relay's name ("" for the default), whose checkpoint bounds the stretches.
	Relay string
	// Interval is how long after the relay's checkpoint passed an event the sweep checks
	// it (and how often it runs); 0 turns the sweep off.
	Interval time.Duration
	// Grace is how long a consumer must have applied nothing more, with its queues empty,
	// before the sweep takes what it has not applied for lost, unless its single active
	// consumer has applied past the stretch already (see look); 0: Interval.
	Grace time.Duration
	// BrokerWait is how long a pass waits for the broker before it fails (0: 10 s): a
	// pass fails, and is tried again at the next interval, rather than hold its lock and
	// its connection while the broker is down.
	BrokerWait time.Duration
	Logger     *slog.Logger
	Metrics    *metrics.Metrics

	// page is how many events a pass reads of the log at a time (0: sweepPage).
	page int
	// afterPage, when set (tests), runs after each page is recorded; an error stops the
	// pass there, as a failure would.
	afterPage func() error
}

// sweepPage is how many events a pass reads of the log at a time.
const sweepPage = 1000

// SweepPass is what one pass over a consumer did.
type SweepPass struct {
	// Locked: another process was sweeping the consumer; nothing was done.
	Locked bool
	// Postponed: a queue of the consumer had messages waiting; nothing was checked.
	Postponed bool
	Checked   int // events of the log read
	Redriven  int // events published again to the consumer's queue
}

// Run sweeps each runner every Interval until ctx ends. A pass that was postponed is
// tried again after a tenth of it.
func (s *Sweep) Run(ctx context.Context) error {
	if s.Interval <= 0 {
		return nil
	}
	log := s.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var targets []target
	for _, r := range s.Runners {
		targets = append(targets, runnerTarget{r})
	}
	if s.WebhookResponder != nil {
		targets = append(targets, webhookTarget{s.WebhookResponder})
	}
	due := make([]time.Time, len(targets))
	for i := range due {
		due[i] = time.Now().Add(s.Interval)
	}
	for {
		next := time.Time{}
		for i, t := range targets {
			if time.Now().Before(due[i]) {
				if next.IsZero() || due[i].Before(next) {
					next = due[i]
				}
				continue
			}
			wait := s.Interval
			res, err := s.pass(ctx, t)
			switch {
			case ctx.Err() != nil:
				return nil
			case err != nil:
				log.Warn("sweep failed: tried again at the next pass", "projection", t.name(), "error", err)
			case res.Postponed:
				wait = max(s.Interval/10, 100*time.Millisecond)
			}
			due[i] = time.Now().Add(wait)
			if next.IsZero() || due[i].Before(next) {
				next = due[i]
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Until(next)):
		}
	}
}

// sweepState is a consumer's row of projection_sweeps.
type sweepState struct {
	at    eventstore.Checkpoint  // checked up to here
	bound *eventstore.Checkpoint // the next pass checks up to here (nil: nothing yet)
}

// Pass checks r's stretch of the log that is due (see Sweep) and publishes again what r
// has not applied of it. The first pass over a consumer starts at the relay's checkpoint:
// what came before is not checked.
func (s *Sweep) Pass(ctx context.Context, r *Runner) (SweepPass, error) {
	return s.pass(ctx, runnerTarget{r})
}

// PassWebhookResponder is Pass for the webhook responder (WebhookResponder); it does
// nothing when that is not set.
func (s *Sweep) PassWebhookResponder(ctx context.Context) (SweepPass, error) {
	if s.WebhookResponder == nil {
		return SweepPass{}, nil
	}
	return s.pass(ctx, webhookTarget{s.WebhookResponder})
}

// target is a consumer the sweep checks.
type target interface {
	name() string
	// ready says how the pass may take what the consumer has not done of the stretch up
	// to bound for lost; nil when it may not yet (messages wait in its queues).
	ready(ctx context.Context, s *Sweep, c *pgxpool.Conn, layouts map[string]layoutRow, bound eventstore.Checkpoint) (*look, error)
	// check finds what the consumer has not done of page, the events of the stretch
	// (from, to], and publishes it again to its queue; it returns how many events it
	// published, or errBusy when the consumer turns out to be still at work.
	check(ctx context.Context, s *Sweep, c *pgxpool.Conn, layouts map[string]layoutRow,
		from, to eventstore.Checkpoint, page []eventstore.Published, lk *look) (int, error)
}

// runnerTarget is a consumer on the projector runtime, which records the stream versions
// it applied.
type runnerTarget struct{ r *Runner }

func (t runnerTarget) name() string { return t.r.Name() }

func (t runnerTarget) ready(ctx context.Context, s *Sweep, c *pgxpool.Conn, layouts map[string]layoutRow, bound eventstore.Checkpoint) (*look, error) {
	return s.ready(ctx, c, t.r, layouts, bound)
}

func (t runnerTarget) check(ctx context.Context, s *Sweep, c *pgxpool.Conn, layouts map[string]layoutRow,
	from, to eventstore.Checkpoint, page []eventstore.Published, lk *look) (int, error) {
	return s.check(ctx, c, t.r, layouts, from, to, page, lk)
}

func (s *Sweep) pass(ctx context.Context, t target) (SweepPass, error) {
	var res SweepPass
	c, err := s.Pool.Acquire(ctx)
	if err != nil {
		return res, err
	}
	defer c.Release()
	key := db.LockKey("chatbotd.sweep." + t.name())
	var got bool
	if err := c.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&got); err != nil {
		return res, err
	}
	if !got {
		res.Locked = true
		return res, nil
	}
	defer func() {
		// A session's lock goes with its connection: one whose unlock failed is closed
		// rather than handed back to the pool holding it.
		if _, err := c.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, key); err != nil {
			_ = c.Conn().Close(context.WithoutCancel(ctx))
		}
	}()
	st, found, err := loadSweep(ctx, c, t.name())
	if err != nil {
		return res, err
	}
	relayed, err := eventstore.RelayCheckpoint(ctx, c, s.Relay)
	if err != nil {
		return res, err
	}
	if !found {
		return res, saveSweep(ctx, c, t.name(), relayed, nil, 0, false)
	}
	if st.bound != nil && st.at.Less(*st.bound) {
		layouts, err := readLayouts(ctx, c)
		if err != nil {
			return res, err
		}
		look, err := t.ready(ctx, s, c, layouts, *st.bound)
		if err != nil {
			return res, err
		}
		if look == nil {
			res.Postponed = true
			return res, nil
		}
		size := s.page
		if size <= 0 {
			size = sweepPage
		}
		for st.at.Less(*st.bound) {
			page, err := eventstore.ReadPublished(ctx, c, st.at, *st.bound, size)
			if err != nil {
				return res, err
			}
			end := *st.bound
			if len(page) == size {
				end = page[len(page)-1].At
			}
			n, err := t.check(ctx, s, c, layouts, st.at, end, page, look)
			if errors.Is(err, errBusy) {
				res.Postponed = true
				return res, nil
			}
			if err != nil {
				return res, err
			}
			res.Checked, res.Redriven = res.Checked+len(page), res.Redriven+n
			st.at = end
			if err := saveSweep(ctx, c, t.name(), st.at, st.bound, n, false); err != nil {
				return res, err
			}
			if s.afterPage != nil {
				if err := s.afterPage(); err != nil {
					return res, err
				}
			}
		}
	}
	return res, saveSweep(ctx, c, t.name(), st.at, &relayed, 0, true)
}

// errBusy stops a pass whose consumer turned out to be still applying what it holds.
var errBusy = errors.New("the consumer is still applying what it holds")

// look is how a pass may take what a consumer has not applied for lost.
type look struct {
	// inOrder: the consumer's single active consumer has applied an event published at or
	// after the stretch's end. Its queue delivers in the order of publishing and it applies
	// in the order of delivery, so it has had everything published before: what it has not
	// applied is lost.
	inOrder bool
	// Otherwise its queues had nothing waiting, and it had got to position (0: nowhere).
	// It may still hold deliveries it has not applied (the responder's four consumers
	// prefetch 200 messages each, the group's 75 frames of up to 64 events): what it has
	// not applied is lost only if, a Grace later, it has applied nothing more meanwhile
	// and its queues still have nothing waiting.
	position int64
}

// ready says how the pass may take what r has not applied of the stretch up to bound for
// lost; nil when it may not yet: messages wait in r's queues.
func (s *Sweep) ready(ctx context.Context, c *pgxpool.Conn, r *Runner, layouts map[string]layoutRow,
	bound eventstore.Checkpoint) (*look, error) {
	position, at, err := progress(ctx, c, r)
	if err != nil {
		return nil, err
	}
	row := rowOf(layouts, r.Name())
	ordered := r.Queue().SingleActiveConsumer && row.partitions <= 1 && row.draining == 0
	if ordered && at != nil && !at.Less(bound) {
		return &look{inOrder: true}, nil
	}
	waiting, err := s.waiting(ctx, r, layouts)
	if err != nil || waiting != "" {
		return nil, err
	}
	return &look{position: position}, nil
}

// progress is the highest position that r's witnesses applied, in any partition, and
// that event's place in commit order (nil when they applied nothing).
func progress(ctx context.Context, c *pgxpool.Conn, r *Runner) (int64, *eventstore.Checkpoint, error) {
	var names []string
	for _, m := range witnesses(r) {
		names = append(names, m.Name())
	}
	var position *int64
	var txid *string
	err := c.QueryRow(ctx, `SELECT p.position, e.transaction_id::text
		FROM (SELECT max(position) AS position FROM projection_positions WHERE split_part(projection, '#', 1) = ANY($1)) AS p
		LEFT JOIN events e ON e.position = p.position`, names).Scan(&position, &txid)
	if err != nil || position == nil || txid == nil {
		return 0, nil, db.Classify(err)
	}
	at := eventstore.Checkpoint{Position: *position}
	if at.TransactionID, err = strconv.ParseUint(*txid, 10, 64); err != nil {
		return 0, nil, err
	}
	return *position, &at, nil
}

// waiting names a queue of r that has messages waiting ("" when none has).
func (s *Sweep) waiting(ctx context.Context, r *Runner, layouts map[string]layoutRow) (string, error) {
	t := Tracked{Name: r.Name(), Queue: r.Queue(), Partitioned: Partitionable(r)}
	return s.waitingIn(ctx, t.queues(layouts))
}

// waitingIn names the first of queues that has messages waiting ("" when none has).
func (s *Sweep) waitingIn(ctx context.Context, queues []string) (string, error) {
	ch, err := s.channel(ctx)
	if err != nil {
		return "", err
	}
	defer ch.Close()
	for _, name := range queues {
		q, err := ch.QueueDeclarePassive(name, true, false, false, false, nil)
		if err != nil {
			return "", fmt.Errorf("queue %s: %w", name, err)
		}
		if q.Messages > 0 {
			return name, nil
		}
	}
	return "", nil
}

// check finds the streams of page, the events of the stretch (from, to], that a member of
// r has not applied up to the last version it binds, and publishes the stretch's events of
// those streams again. It returns how many it published.
func (s *Sweep) check(ctx context.Context, c *pgxpool.Conn, r *Runner, layouts map[string]layoutRow,
	from, to eventstore.Checkpoint, page []eventstore.Published, lk *look) (int, error) {
	var names []string
	var ids []uuid.UUID
	var versions []int32
	for _, m := range witnesses(r) {
		match := events.TopicMatcher(m.Bindings())
		want := map[uuid.UUID]int{}
		for _, p := range page {
			if match(p.Type) {
				want[p.StreamID] = max(want[p.StreamID], p.StreamVersion)
			}
		}
		for id, v := range want {
			names, ids, versions = append(names, m.Name()), append(ids, id), append(versions, int32(v))
		}
	}
	behind, err := notApplied(ctx, c, names, ids, versions)
	if err != nil || len(behind) == 0 {
		return 0, err
	}
	if !lk.inOrder {
		if err := s.stillIdle(ctx, c, r, layouts, lk.position); err != nil {
			return 0, err
		}
		names, ids, versions = names[:0], ids[:0], versions[:0]
		for _, b := range behind {
			names, ids, versions = append(names, b.member), append(ids, b.stream), append(versions, b.version)
		}
		if behind, err = notApplied(ctx, c, names, ids, versions); err != nil || len(behind) == 0 {
			return 0, err
		}
	}
	var streams []uuid.UUID
	members := map[string]int{} // streams missing an event, by member
	seen := map[uuid.UUID]bool{}
	for _, b := range behind {
		members[b.member]++
		if !seen[b.stream] {
			seen[b.stream] = true
			streams = append(streams, b.stream)
		}
	}
	envs, err := s.redrive(ctx, c, from, to, streams, redriveTarget(r, layouts))
	if err != nil {
		return 0, err
	}
	if s.Logger != nil {
		first := envs[0]
		s.Logger.Warn("events not applied an interval after the broker confirmed them: published again from the log",
			"projection", r.Name(), "streams_behind", members, "events", len(envs),
			"first_event_id", first.ID, "first_type", first.Type, "first_position", first.Position)
	}
	s.Metrics.Redriven(r.Name(), len(envs))
	return len(envs), nil
}

// stillIdle waits a Grace, and returns errBusy unless r has applied nothing past position
// meanwhile and its queues still have nothing waiting.
func (s *Sweep) stillIdle(ctx context.Context, c *pgxpool.Conn, r *Runner, layouts map[string]layoutRow, position int64) error {
	grace := s.Grace
	if grace <= 0 {
		grace = s.Interval
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(grace):
	}
	now, _, err := progress(ctx, c, r)
	if err != nil {
		return err
	}
	if now != position {
		return errBusy
	}
	waiting, err := s.waiting(ctx, r, layouts)
	if err != nil {
		return err
	}
	if waiting != "" {
		return errBusy
	}
	return nil
}

// redrive publishes the events of streams in the stretch (from, to] again, in commit
// order, to one consumer's queue (eventstore.Redrive), and returns them.
func (s *Sweep) redrive(ctx context.Context, c *pgxpool.Conn, from, to eventstore.Checkpoint, streams []uuid.UUID,
	target eventstore.RedriveTarget) ([]events.Envelope, error) {
	envs, err := eventstore.ReadStretch(ctx, c, from, to, streams)
	if err != nil {
		return nil, err
	}
	ch, err := s.channel(ctx)
	if err != nil {
		return nil, err
	}
	defer ch.Close()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return envs, eventstore.Redrive(rctx, ch, target, envs)
}

// channel opens a broker channel, waiting for the broker at most BrokerWait.
func (s *Sweep) channel(ctx context.Context) (*amqp.Channel, error) {
	wait := s.BrokerWait
	if wait <= 0 {
		wait = 10 * time.Second
	}
	cctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	return s.Broker.Channel(cctx)
}

// behind is a stream whose version a member had not applied.
type behind struct {
	member  string
	stream  uuid.UUID
	version int32
}

// notApplied are the streams of ids whose version a member of names (each at the same
// index) has not applied.
func notApplied(ctx context.Context, c *pgxpool.Conn, names []string, ids []uuid.UUID, versions []int32) ([]behind, error) {
	if len(names) == 0 {
		return nil, nil
	}
	rows, err := c.Query(ctx, `SELECT u.p, u.s, u.v FROM unnest($1::text[], $2::uuid[], $3::int[]) AS u(p, s, v)
		WHERE NOT EXISTS (SELECT 1 FROM projection_streams ps WHERE ps.projection = u.p AND ps.stream_id = u.s AND ps.version >= u.v)`,
		names, ids, versions)
	if err != nil {
		return nil, db.Classify(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (behind, error) {
		var b behind
		err := r.Scan(&b.member, &b.stream, &b.version)
		return b, err
	})
	return out, db.Classify(err)
}

// witnesses are the members of r whose stream versions tell whether r received an event.
// A group applies a batch for all its members in one transaction, so a member that binds
// every event type has every delivery the group took: it alone is asked, with one probe
// of projection_streams a stream where each member would take one. (A member's poison
// event, dead-lettered for that member alone, is then not published again: it waits in
// the member's dead-letter queue, as it would have anyway.) Otherwise every member is.
func witnesses(r *Runner) []Projector {
	for _, m := range r.members() {
		if _, all := events.TopicRegexps(m.Bindings()); all {
			return []Projector{m}
		}
	}
	return r.members()
}

// redriveTarget is how a message reaches r's queue alone: straight to it, or, split over
// partitions, through its layout's split exchange, by the bucket header.
func redriveTarget(r *Runner, layouts map[string]layoutRow) eventstore.RedriveTarget {
	q := r.Queue()
	t := eventstore.RedriveTarget{Key: q.Name, Framed: q.Frames, Store: r.cfg.Store}
	if Partitionable(r) {
		if n := rowOf(layouts, r.Name()).partitions; n > 1 {
			t.Exchange, t.Key = Layout(r, n).SplitExchange(), ""
		}
	}
	return t
}

func loadSweep(ctx context.Context, q *pgxpool.Conn, name string) (sweepState, bool, error) {
	var st sweepState
	var at string
	var bound *string
	var boundPos *int64
	err := q.QueryRow(ctx, `SELECT transaction_id::text, position, bound_transaction_id::text, bound_position
		FROM projection_sweeps WHERE name = $1`, name).Scan(&at, &st.at.Position, &bound, &boundPos)
	if errors.Is(err, pgx.ErrNoRows) {
		return st, false, nil
	}
	if err != nil {
		return st, false, db.Classify(err)
	}
	if st.at.TransactionID, err = strconv.ParseUint(at, 10, 64); err != nil {
		return st, false, err
	}
	if bound != nil && boundPos != nil {
		b := eventstore.Checkpoint{Position: *boundPos}
		if b.TransactionID, err = strconv.ParseUint(*bound, 10, 64); err != nil {
			return st, false, err
		}
		st.bound = &b
	}
	return st, true, nil
}

// saveSweep records where name's sweep is, adds redriven to its count, and, when done,
// the time of a finished pass.
func saveSweep(ctx context.Context, q *pgxpool.Conn, name string, at eventstore.Checkpoint, bound *eventstore.Checkpoint,
	redriven int, done bool) error {
	var boundTx *string
	var boundPos *int64
	if bound != nil {
		tx := strconv.FormatUint(bound.TransactionID, 10)
		boundTx, boundPos = &tx, &bound.Position
	}
	// One implicit transaction, committed without waiting for the disk (the setting is
	// local to it), so that a long pass does not wait for a flush a page: a record lost
	// with a crash of PostgreSQL only makes the next pass check a stretch again.
	b := &pgx.Batch{}
	b.Queue(`SELECT set_config('synchronous_commit', 'off', true)`)
	b.Queue(`INSERT INTO projection_sweeps AS s (name, transaction_id, position, bound_transaction_id, bound_position,
			redriven, swept_at)
		VALUES ($1, $2::text::xid8, $3, $4::text::xid8, $5, $6, CASE WHEN $7 THEN now() END)
		ON CONFLICT (name) DO UPDATE SET transaction_id = excluded.transaction_id, position = excluded.position,
			bound_transaction_id = excluded.bound_transaction_id, bound_position = excluded.bound_position,
			redriven = s.redriven + excluded.redriven, swept_at = coalesce(excluded.swept_at, s.swept_at), updated_at = now()`,
		name, strconv.FormatUint(at.TransactionID, 10), at.Position, boundTx, boundPos, redriven, done)
	return db.Classify(q.SendBatch(ctx, b).Close())
}
