// Package projections turns the event stream into read models, caches and side effects.
// The runtime here consumes a projector's own durable queue in batches; each projector
// only says how one event changes its tables.
package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/broker"
	"github.com/chatbotsaas/chatbotd/internal/db"
	"github.com/chatbotsaas/chatbotd/internal/faults"
	"github.com/chatbotsaas/chatbotd/internal/metrics"
	"github.com/chatbotsaas/chatbotd/internal/retry"
)

// Projector is one read model. Apply is called inside the batch's transaction, exactly
// once per stream version and in version order within a stream; events of different
// streams may come in any order.
type Projector interface {
	// Name keys the projector's queue and its version tracking. It is a constant: a new
	// name is a new queue that consumes everything again.
	Name() string
	// Bindings are the routing patterns of the projector's queue.
	Bindings() []string
	Apply(ctx context.Context, tx pgx.Tx, e events.Envelope) error
}

// AfterCommitter is implemented by projectors that do work after their transaction
// commits (writing caches). It is given every event of the batch, those applied and
// those skipped as applied before: a delivery that comes back because the process died
// between the commit and this work gets the work done then. So it must tolerate being
// called again for the same events. An error leaves the batch unacknowledged: it is
// delivered again, and the work redone.
type AfterCommitter interface {
	AfterCommit(ctx context.Context, batch []events.Envelope) error
}

// AppliedAfterCommitter is an AfterCommitter that can also be told which events of the
// batch its committed transaction applied (the others were applied by an earlier one
// and skipped): what those wrote is then known without reading it back. The runtime
// calls AfterApplied after the batches it commits whole, and AfterCommit after what it
// applies member by member or event by event after a failure, where it does not keep
// what was applied. The same rules hold as for AfterCommit.
type AppliedAfterCommitter interface {
	AfterCommitter
	AfterApplied(ctx context.Context, batch, applied []events.Envelope) error
}

// Pipelined is implemented by projectors that are not rebuildable but, like those, never
// depend on what an Exec returns (its command tag), so the runtime may pipeline their
// writes (see pipeTx). They may read: a read is sent after every write queued before
// it, in the batch's transaction, so it sees them.
type Pipelined interface {
	Pipelined()
}

// Prefetcher is implemented by projectors that can read what a batch needs before any of
// the batch's writes: the read goes in the round trip of the batch's prelude instead of
// one of its own. Prefetch queues its reads into b for envs (the projector's share) and
// returns what gives them to its Apply or ApplySet (a context carrying them), or queues
// nothing and returns nil when the batch holds what could change the result (a read
// that must see the batch's own writes is left to Apply). The results are read when the
// prelude's round trip ends, before Apply.
type Prefetcher interface {
	Prefetch(b *pgx.Batch, envs []events.Envelope) func(context.Context) context.Context
}

// DeadLetterer is implemented by projectors that record a dead-lettered event (so that a
// user sees "failed" rather than waiting forever). It is called once the event has been
// dead-lettered, best effort.
type DeadLetterer interface {
	DeadLettered(ctx context.Context, e events.Envelope, cause error)
}

// Config configures a Runner.
type Config struct {
	Exchange    string
	QueuePrefix string
	// Store is the event store whose events are applied (eventstore.Identity): an
	// envelope naming another store (a deployment sharing the exchange) is acknowledged
	// and skipped. uuid.Nil applies every envelope (tests of the runtime alone).
	Store         uuid.UUID
	BatchSize     int
	DeliveryLimit int
	// Linger is how long a batch waits for more messages after the first one.
	Linger time.Duration
	// Attempts is how often one failing event is tried before it is dead-lettered.
	Attempts int
	Logger   *slog.Logger
	Metrics  *metrics.Metrics
	// Applied, when set, is told after each committed batch that applied something, to
	// wake the queries waiting for this projection.
	Applied *AppliedNotifier
	// DeferFlush is for projectors that only build read models, never append events
	// (serving's group): a batch then commits without waiting for its WAL to reach the
	// disk, and is acknowledged once it has (see Runner.durable). The next batch is
	// applied meanwhile: the wait is the settler's, beside it. A crash of PostgreSQL
	// may lose such a batch, whole; its messages were not acknowledged, so they come
	// back and it is applied again. Never for a reactor: an event it appended could be
	// published, then lost. Its batches are also marked as never appending
	// (eventstore.NeverAppends): the relay does not wait for them to read the appends
	// that began meanwhile, and a batch that tried to append would fail.
	DeferFlush bool
}

func (c *Config) setDefaults() {
	if c.BatchSize <= 0 {
		c.BatchSize = 200
	}
	if c.DeliveryLimit <= 0 {
		c.DeliveryLimit = 5
	}
	if c.Linger <= 0 {
		c.Linger = 2 * time.Millisecond
	}
	if c.Attempts <= 0 {
		c.Attempts = 3
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Runner consumes one projector's queue.
type Runner struct {
	pool   *pgxpool.Pool
	broker eventstore.Channeler
	p      Projector
	cfg    Config
	log    *slog.Logger
	// partition, when set, is the one queue of a partitioned layout this runner consumes
	// (see Partitions); the layout's owner declares it, never the runner.
	partition *broker.QueueSpec
	// n and k are the layout (its partition count) and the partition the runner consumes,
	// 1 and 0 without partitions: its projectors' rows of projection_positions are
	// PositionsKey(name, n, k), so that partitions do not queue behind each other's
	// commits for one row.
	n, k int
	// deadLetters is the channel a group's runner publishes a member's dead letters on
	// (see deadLetter), opened on first use; consume closes it.
	deadLetters *amqp.Channel
	// flushWAL makes every transaction committed so far durable (see durable).
	flushWAL func(ctx context.Context) error
}

// forQueue is a runner of the same projector that consumes queue q, partition k of a
// layout of n partitions.
func (r *Runner) forQueue(q broker.QueueSpec, n, k int) *Runner {
	c := *r
	c.partition, c.n, c.k, c.deadLetters = &q, n, k, nil
	c.log = r.log.With("queue", q.Name)
	return &c
}

// Members are the names of the projectors the runner applies: a group's members, or its
// projector's.
func (r *Runner) Members() []string {
	var out []string
	for _, p := range r.members() {
		out = append(out, p.Name())
	}
	return out
}

// members are the projectors the runner applies: a group's members, or its projector.
func (r *Runner) members() []Projector {
	if g, ok := r.p.(*Group); ok {
		return g.members
	}
	return []Projector{r.p}
}

// share is a member's share of a batch: the indexes of its events.
type share struct {
	p   Projector
	idx []int
}

// shares splits envs between the runner's members (all of them to a lone projector).
func (r *Runner) shares(envs []events.Envelope) []share {
	g, ok := r.p.(*Group)
	if !ok {
		all := make([]int, len(envs))
		for i := range all {
			all[i] = i
		}
		return []share{{p: r.p, idx: all}}
	}
	out := make([]share, len(g.members))
	for i, m := range g.members {
		out[i].p = m
	}
	for j, e := range envs {
		for i, match := range g.match {
			if match(e.Type) {
				out[i].idx = append(out[i].idx, j)
			}
		}
	}
	return out
}

func pick(envs []events.Envelope, idx []int) []events.Envelope {
	out := make([]events.Envelope, len(idx))
	for i, j := range idx {
		out[i] = envs[j]
	}
	return out
}

// MemberQueue is the queue that member m of the runner's group is consumed from, with m's
// bindings and m's own dead-letter queue (DeadQueue); for a lone projector, Queue.
// Operators list and redrive a member's dead letters through it: a redriven event goes
// back to the group's queue, where the other members skip it as applied.
func (r *Runner) MemberQueue(m string) broker.QueueSpec {
	q := r.Queue()
	if _, ok := r.p.(*Group); !ok {
		return q
	}
	for _, p := range r.members() {
		if p.Name() == m {
			q.Bindings = p.Bindings()
		}
	}
	q.DeadLetterTo = r.cfg.QueuePrefix + m
	return q
}

// NewRunner returns a runner for p; Run starts it.
func NewRunner(pool *pgxpool.Pool, b eventstore.Channeler, p Projector, cfg Config) (*Runner, error) {
	cfg.setDefaults()
	if cfg.Exchange == "" {
		return nil, errors.New("projections: Exchange is required")
	}
	log := cfg.Logger.With("projector", p.Name())
	if _, ok := p.(*Group); ok {
		log = cfg.Logger.With("group", p.Name()) // each line of a member's says which
	}
	r := &Runner{pool: pool, broker: b, p: p, cfg: cfg, log: log, n: 1}
	r.flushWAL = r.syncCommit
	return r, nil
}

// durable returns once the batches the runner committed are on disk: at once unless
// DeferFlush. Whatever acknowledges a batch, or acts on it outside PostgreSQL (its
// after-commit work), calls it first.
func (r *Runner) durable(ctx context.Context) error {
	if !r.cfg.DeferFlush {
		return nil
	}
	return r.flushWAL(ctx)
}

// syncCommit commits a transaction that has a transaction id, with the session's
// synchronous_commit (on by default), so its commit record is flushed, and with it the
// WAL of every commit before it: the runner's deferred ones. PostgreSQL has no function
// to flush the WAL for a client; a poll of pg_current_wal_flush_lsn would wait for the
// WAL writer, up to wal_writer_delay.
//
// The transaction never appends, and holds its id while it waits for the disk: it is
// marked (eventstore.NeverAppends) so that the relay does not wait for it. One round
// trip: a batch is one implicit transaction.
func (r *Runner) syncCommit(ctx context.Context) error {
	var b pgx.Batch
	b.Queue(`SELECT `+eventstore.NeverAppends, eventstore.NeverAppendsArgs()...)
	b.Queue(`SELECT txid_current()`)
	return r.pool.SendBatch(ctx, &b).Close()
}

// Name is the projector's name.
func (r *Runner) Name() string { return r.p.Name() }

// BatchSize is the most events one batch of the runner applies (Config.BatchSize).
func (r *Runner) BatchSize() int { return r.cfg.BatchSize }

// Independent is implemented by projectors whose events never depend on each other
// across streams (each chat message is a stream of its own, answered on its own): their
// queue takes competing consumers. Every other projector's queue has a single active
// consumer, so that two processes never apply its events side by side, out of order.
type Independent interface {
	Independent() bool
}

// Queue is the projector's queue. A group's takes frames (broker.FrameHeader): the relay
// that feeds it must publish them (eventstore.RelayConfig.Frames).
func (r *Runner) Queue() broker.QueueSpec {
	ind, ok := r.p.(Independent)
	_, group := r.p.(*Group)
	return broker.QueueSpec{
		Name:                 r.cfg.QueuePrefix + r.p.Name(),
		Exchange:             r.cfg.Exchange,
		Bindings:             r.p.Bindings(),
		DeliveryLimit:        r.cfg.DeliveryLimit,
		SingleActiveConsumer: !ok || !ind.Independent(),
		Frames:               group,
	}
}

// Run consumes until ctx ends, reconnecting after failures. On return nothing unfinished
// was acknowledged: RabbitMQ redelivers it.
func (r *Runner) Run(ctx context.Context) error {
	var pause retry.Backoff
	for {
		err := r.consume(ctx)
		if ctx.Err() != nil {
			return nil
		}
		d := pause.Next()
		r.log.Warn("projector interrupted, retrying", "error", err, "in", d)
		if !retry.Sleep(ctx.Done(), d) {
			return nil
		}
	}
}

func (r *Runner) consume(ctx context.Context) error {
	ch, err := r.broker.Channel(ctx)
	if err != nil {
		return err
	}
	defer ch.Close()
	defer func() {
		if r.deadLetters != nil {
			_ = r.deadLetters.Close()
			r.deadLetters = nil
		}
	}()
	q := r.Queue()
	if r.partition != nil {
		// Not declared here: a partition's queue that is gone was removed after its drain,
		// and declaring it again would bind it again.
		q = *r.partition
	} else {
		if err := broker.DeclareEventExchange(ch, r.cfg.Exchange); err != nil {
			return err
		}
		if err := broker.DeclareQueue(ch, q); err != nil {
			return err
		}
	}
	if _, ok := r.p.(*Group); ok {
		for _, m := range r.members() {
			if err := broker.DeclareDeadQueue(ch, r.MemberQueue(m.Name())); err != nil {
				return err
			}
		}
	}
	// Three batches in flight for a queue with one consumer: one being settled (see
	// settler), one applied, and the next arriving meanwhile, instead of after an ack. A
	// queue of competing consumers (the responder's) gets one batch each: with two, one
	// consumer took a whole burst while the others idled. BENCHMARKS.md has the figures.
	prefetch := r.cfg.BatchSize
	if q.SingleActiveConsumer {
		prefetch *= 3
	}
	if r.Queue().Frames { // a partition of a queue of frames takes them too
		// Counted in messages, and a frame holds up to events.FrameMax events: an eighth
		// holds three batches of frames of eight events or more, while what a consumer
		// holds is at most FrameMax/8 times what it held with single events.
		prefetch = max(prefetch/8, 3)
	}
	if err := ch.Qos(prefetch, 0, false); err != nil {
		return err
	}
	deliveries, err := ch.Consume(q.Name, "", false, false, false, false, nil)
	if err != nil {
		return err
	}
	r.log.Info("projector consuming", "queue", q.Name)
	// The batches are finished even when ctx ends meanwhile, so what is acked was applied.
	settle := newSettler(context.WithoutCancel(ctx), ctx.Done(), r)
	defer settle.close()
	// Deliveries are decoded as they arrive, up to the prefetch ahead, while the batch
	// before them is applied: the apply mostly waits for PostgreSQL, and decoding a
	// batch on this goroutine between two applies took a seventh of the projector's time.
	// What is decoded and not handled when this returns goes back with the channel.
	decoded := make(chan received, prefetch)
	stopDecoding := make(chan struct{})
	defer close(stopDecoding)
	go decodeAhead(deliveries, decoded, stopDecoding)
	// The batch whose COMMIT is on its way while the next one is applied (see committingBatch).
	var inflight *committingBatch
	defer func() {
		if inflight != nil {
			inflight.drop(context.WithoutCancel(ctx))
		}
	}()
	landInflight := func() error {
		c := inflight
		inflight = nil
		return r.land(context.WithoutCancel(ctx), ctx.Done(), settle, c)
	}
	for {
		if inflight != nil && len(decoded) == 0 {
			// Nothing at hand to apply meanwhile: the batch is finished first.
			if err := landInflight(); err != nil {
				return err
			}
		}
		var batch []received
		select {
		case <-ctx.Done():
			if inflight != nil {
				return landInflight()
			}
			return nil
		case <-settle.broken:
			return settle.failed()
		case d, ok := <-decoded:
			if !ok {
				return errors.New("delivery channel closed")
			}
			faults.Duplicate(ch, q.Name, d.d)
			batch = append(batch, d)
		}
		// A batch counts events, and takes frames whole: a frame is acknowledged once,
		// with the batch that applied every event of it.
		size := batch[0].size()
		linger := time.NewTimer(r.cfg.Linger)
	fill:
		for size < r.cfg.BatchSize {
			select {
			case d, ok := <-decoded:
				if !ok {
					break fill
				}
				faults.Duplicate(ch, q.Name, d.d)
				batch = append(batch, d)
				size += d.size()
			case <-linger.C:
				break fill
			}
		}
		linger.Stop()
		if err := r.handle(context.WithoutCancel(ctx), ctx.Done(), settle, batch, &inflight); err != nil {
			return err
		}
	}
}

// handle applies a batch and settles every delivery of it: a committed batch through
// settle, which does it while the next batch is applied. While the database is
// unavailable it holds the batch and tries again, until stop: giving the deliveries back
// would count each outage against their delivery limit, and a long one would dead-letter
// events that did nothing wrong. It returns an error for failures that are not the
// events' fault (stopped while the database is down, after-commit work that failed): the
// deliveries are then left unacknowledged and come back.
//
// The batch is left committing in *inflight, its COMMIT sent, and the batch that was
// there is finished meanwhile (see committingBatch).
func (r *Runner) handle(ctx context.Context, stop <-chan struct{}, settle *settler, batch []received, inflight **committingBatch) error {
	w := pendingBatch{settlement: settlement{envs: make([]events.Envelope, 0, len(batch)), good: make([]amqp.Delivery, 0, len(batch))}}
	for _, rd := range batch {
		d, err := rd.d, rd.err
		if rd.fence {
			w.fences = append(w.fences, d)
			continue
		}
		if err != nil {
			r.log.Error("undecodable message dead-lettered", "error", err, "message_id", d.MessageId)
			_ = d.Nack(false, false)
			r.cfg.Metrics.DeadLettered(r.p.Name())
			continue
		}
		mine := 0
		for _, e := range rd.envs {
			if !e.OfStore(r.cfg.Store) {
				// Its own deployment's queues hold their copy: skipping this one loses nothing.
				r.log.Debug("event of another store skipped", "event_id", e.ID, "store_id", e.StoreID)
				r.cfg.Metrics.Foreign(r.p.Name())
				continue
			}
			w.envs = append(w.envs, e)
			w.from = append(w.from, len(w.good))
			mine++
		}
		if mine == 0 {
			_ = d.Ack(false)
			continue
		}
		w.good = append(w.good, d)
	}
	prev := *inflight
	*inflight = nil
	if len(w.envs) == 0 {
		if prev != nil {
			if err := r.land(ctx, stop, settle, prev); err != nil {
				return err
			}
		}
		if err := settle.wait(); err != nil {
			return err
		}
		return r.passFences(ctx, stop, w.fences)
	}
	w.shares = r.shares(w.envs)
	var before func() error
	if prev != nil {
		before = prev.outcome
	}
	b, err := r.prepareBatch(ctx, w.shares, w.envs, before)
	if prev != nil {
		if prev.outcome() != nil {
			// The batch before failed: this one lets go of its rows before that one is
			// applied again, and is applied again after it, from the start (whatever
			// stopped its preparing was that one's failure, or comes again).
			if b != nil {
				b.abandon(ctx)
				b = nil
			}
			err = nil
		}
		if lerr := r.land(ctx, stop, settle, prev); lerr != nil {
			if b != nil {
				b.abandon(ctx)
			}
			return lerr
		}
	}
	if errors.Is(err, errNoSpareConn) {
		err = nil // as if it had come after the batch before: applied from the start
	}
	if b == nil {
		return r.applyAndSettle(ctx, stop, settle, w, err)
	}
	faults.Crash("projector.batch")
	outcome, err := b.sendCommit(ctx)
	if err != nil {
		b.abandon(ctx)
		return r.applyAndSettle(ctx, stop, settle, w, err)
	}
	*inflight = &committingBatch{b: b, w: w, outcome: sync.OnceValue(outcome)}
	return nil
}

// pendingBatch is a batch's settlement (its events, shares and deliveries) and which
// delivery carried each event.
type pendingBatch struct {
	settlement
	from []int // from[i] is the index in good of the delivery that carried envs[i]
}

// committingBatch is a batch whose COMMIT is sent, and whose outcome is read once.
//
// Why: a batch's commit round trip is most of its time in PostgreSQL, and the consumer
// waited for it before it began the next batch, whose prelude (its lock, its streams'
// versions) and apply then came after it, one round trip and the decoding later. The
// next batch at hand is prepared meanwhile instead, on another connection: its prelude
// runs beside the commit (where they share a stream, it waits for the commit, as any
// two batches do), and it sends nothing more before the outcome is known (pipeTx.before):
// its writes could otherwise take a lock the committing batch still needs, and neither
// would go on. The commits stay in order, one at a time, and so do the settlements.
// BENCHMARKS.md has the figures ("The next batch is prepared while one commits").
type committingBatch struct {
	b *preparedBatch
	w pendingBatch
	// outcome is the COMMIT's result, read the first time it is called.
	outcome func() error
}

// land finishes a batch whose COMMIT was sent: committed, it goes to the settler; failed,
// it is applied again as a batch that failed (applyAndSettle).
func (r *Runner) land(ctx context.Context, stop <-chan struct{}, settle *settler, c *committingBatch) error {
	if err := c.outcome(); err != nil {
		c.b.abandon(ctx)
		return r.applyAndSettle(ctx, stop, settle, c.w, err)
	}
	r.committed(ctx, c.b)
	c.w.applied = c.b.each
	return settle.submit(c.w.settlement)
}

// drop reads the outcome of a batch whose COMMIT was sent and gives its connection back,
// settling nothing: its deliveries come back (the consumer is ending on a failure).
func (c *committingBatch) drop(ctx context.Context) {
	if c.outcome() == nil {
		c.b.c.Release()
		return
	}
	c.b.abandon(ctx)
}

// applyAndSettle applies a batch on its own and settles it, after a first attempt that
// failed with err (nil: none was made, or it failed for another batch's fault): while the
// database is unavailable, held and tried again (applyWaiting); a batch that fails, one
// event at a time (applyOneByOne).
func (r *Runner) applyAndSettle(ctx context.Context, stop <-chan struct{}, settle *settler, w pendingBatch, err error) error {
	if err == nil || db.IsUnavailable(err) {
		w.applied, err = r.applyWaiting(ctx, stop, w.shares, w.envs)
	}
	if err == nil {
		return settle.submit(w.settlement)
	}
	return r.applyOneByOne(ctx, stop, settle, err, w)
}

// applyOneByOne settles w, a batch whose transaction failed with err: each member's share
// is applied again on its own, and a share that fails, one event at a time, until the
// event that fails is dead-lettered (for that member, in a group) and the rest applied.
func (r *Runner) applyOneByOne(ctx context.Context, stop <-chan struct{}, settle *settler, err error, w pendingBatch) error {
	envs, good, from := w.envs, w.good, w.from
	// What follows settles deliveries here, after the batches before it.
	if err := settle.wait(); err != nil {
		return err
	}
	if db.IsUnavailable(err) {
		return err
	}
	r.log.Warn("batch failed, applying one by one", "error", err, "size", len(envs))
	// Isolate the poison event: the others go through, it alone is dead-lettered (for the
	// member it is poison to, in a group). Every delivery is settled at the end: in a
	// group one delivery may be applied by a member and dead-lettered for another.
	_, group := r.p.(*Group)
	rejected := make([]bool, len(good))
	for _, sh := range w.shares {
		if len(sh.idx) == 0 {
			continue
		}
		name := sh.p.Name()
		if group {
			// Most members of a failed group batch are not the cause: their share goes in one
			// transaction.
			_, err := r.applyWaiting(ctx, stop, []share{sh}, envs)
			if err == nil {
				if err := r.afterOwnCommit(ctx, sh.p, pick(envs, sh.idx)); err != nil {
					return err
				}
				continue
			}
			if db.IsUnavailable(err) {
				return err
			}
		}
		r.cfg.Metrics.Retried(name)
		for _, i := range sh.idx {
			e := envs[i]
			one := []share{{p: sh.p, idx: []int{i}}}
			var err error
			for attempt := 1; attempt <= r.cfg.Attempts; attempt++ {
				_, err = r.applyWaiting(ctx, stop, one, envs)
				if err == nil || db.IsUnavailable(err) {
					break
				}
				r.cfg.Metrics.Retried(name)
				time.Sleep(time.Duration(attempt*attempt) * 50 * time.Millisecond)
			}
			switch {
			case err == nil:
				if err := r.afterOwnCommit(ctx, sh.p, envs[i:i+1]); err != nil {
					return err
				}
			case db.IsUnavailable(err):
				return err
			default:
				r.log.Error("event dead-lettered", "error", err, "projection", name, "event_id", e.ID, "type", e.Type,
					"stream_id", e.StreamID, "stream_version", e.StreamVersion, "correlation_id", e.CorrelationID)
				d := good[from[i]]
				if group {
					if err := r.deadLetter(ctx, name, d, e); err != nil {
						return err
					}
				} else if _, framed := d.Headers[broker.FrameHeader]; framed {
					// Never so: only a group's queue takes frames. Were it so, the frame's
					// other events are applied, and the frame is kept whole, for an operator.
					return fmt.Errorf("event %s of frame %s is poison to %s", e.ID, d.MessageId, name)
				} else {
					_ = d.Nack(false, false)
					rejected[from[i]] = true
				}
				r.cfg.Metrics.DeadLettered(name)
				if dl, ok := sh.p.(DeadLetterer); ok {
					dl.DeadLettered(ctx, e, err)
				}
			}
		}
	}
	if err := r.durable(ctx); err != nil {
		return err
	}
	for i, d := range good {
		if !rejected[i] {
			_ = d.Ack(false)
		}
	}
	return r.passFences(ctx, stop, w.fences)
}

// received is a delivery as decodeAhead hands it on.
type received struct {
	d     amqp.Delivery
	envs  []events.Envelope // its event, or a frame's events
	err   error             // the body is no envelope, or no frame of them
	fence bool              // a fence (broker.FenceHeader), which has no envelope
}

// size is how many events the delivery counts for in a batch (one, if it has none).
func (rd received) size() int { return max(len(rd.envs), 1) }

// decodeAhead decodes each delivery in the order they come and hands it on, until
// deliveries closes (then it closes out) or stop.
func decodeAhead(deliveries <-chan amqp.Delivery, out chan<- received, stop <-chan struct{}) {
	defer close(out)
	for d := range deliveries {
		rd := received{d: d}
		if _, ok := d.Headers[broker.FenceHeader]; ok {
			rd.fence = true
		} else {
			rd.envs, rd.err = decodeDelivery(d)
		}
		select {
		case out <- rd:
		case <-stop:
			return
		}
	}
}

// decodeDelivery is the events d carries: a frame's (broker.FrameHeader), or its one
// envelope.
func decodeDelivery(d amqp.Delivery) ([]events.Envelope, error) {
	if _, framed := d.Headers[broker.FrameHeader]; framed {
		return events.DecodeFrame(d.Body)
	}
	e, err := events.DecodeEnvelope(d.Body)
	if err != nil {
		return nil, err
	}
	return []events.Envelope{e}, nil
}

// deadLetter puts a copy of e, which d carried, into the dead-letter queue of member of
// the runner's group, with the headers the broker gives what it dead-letters, and waits
// for the broker's confirm. The delivery itself is acknowledged with its batch: the
// group's other members applied it. An event of a frame is dead-lettered alone, as the
// relay publishes it to the event exchange.
func (r *Runner) deadLetter(ctx context.Context, member string, d amqp.Delivery, e events.Envelope) error {
	// The copy and the acknowledgement are two steps, so a copy made when the delivery
	// cannot be acknowledged any more (its channel went with the connection) is made again
	// when the delivery comes back: a duplicate in the dead letters. Such a batch comes
	// back whole instead. (The connection can still go between the copy's confirm and the
	// acknowledgement: a member's dead letters are at least once.)
	if ch, ok := d.Acknowledger.(*amqp.Channel); ok && ch.IsClosed() {
		return fmt.Errorf("dead letter %s for %s: the delivery's channel is closed", d.MessageId, member)
	}
	if r.deadLetters == nil || r.deadLetters.IsClosed() {
		ch, err := r.broker.Channel(ctx)
		if err != nil {
			return err
		}
		if err := ch.Confirm(false); err != nil {
			_ = ch.Close()
			return err
		}
		r.deadLetters = ch
	}
	q := r.MemberQueue(member)
	msg := amqp.Publishing{ContentType: d.ContentType, DeliveryMode: amqp.Persistent, MessageId: d.MessageId,
		CorrelationId: d.CorrelationId, Type: d.Type, Timestamp: d.Timestamp, Body: d.Body}
	if _, framed := d.Headers[broker.FrameHeader]; framed {
		body, err := e.MarshalJSON()
		if err != nil {
			return fmt.Errorf("dead letter %s for %s: %w", e.ID, member, err)
		}
		msg = amqp.Publishing{ContentType: "application/json", DeliveryMode: amqp.Persistent, MessageId: e.ID.String(),
			CorrelationId: e.CorrelationID, Type: e.Type, Timestamp: e.OccurredAt, Body: body}
	}
	headers := amqp.Table{}
	for k, v := range d.Headers {
		if k != broker.FrameHeader {
			headers[k] = v
		}
	}
	now := time.Now().UTC().Truncate(time.Second)
	headers["x-first-death-reason"], headers["x-first-death-queue"] = "rejected", d.RoutingKey
	headers["x-death"] = []any{amqp.Table{"reason": "rejected", "queue": q.Name, "time": now, "count": int64(1),
		"exchange": d.Exchange, "routing-keys": []any{d.RoutingKey}}}
	msg.Headers = headers
	conf, err := r.deadLetters.PublishWithDeferredConfirmWithContext(ctx, q.DeadLetterExchange(), q.DeadLetterTo, true, false, msg)
	if err != nil {
		return err
	}
	ok, err := conf.WaitContext(ctx)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("the broker did not confirm dead letter %s for %s", d.MessageId, member)
	}
	return nil
}

// passFences records that the fences of a layout switch were reached (see Partitions),
// waiting while the database is unavailable, and acknowledges them. The events before a
// fence are applied and settled before it is passed.
func (r *Runner) passFences(ctx context.Context, stop <-chan struct{}, fences []amqp.Delivery) error {
	for _, d := range fences {
		fence, _ := d.Headers[broker.FenceHeader].(string)
		_, err := retry.Hold(stop, db.IsUnavailable, func(err error, wait time.Duration) {
			r.log.Warn("database unavailable: holding the fence", "error", err, "retry_in", wait)
		}, func() (struct{}, error) { return struct{}{}, recordFence(ctx, r.pool, r.p.Name(), fence) })
		if err != nil {
			return err
		}
		r.log.Info("old partition drained", "fence", fence)
		if err := d.Ack(false); err != nil {
			return err
		}
	}
	return nil
}

// ackAll acknowledges a batch with one frame: the last delivery's ack with "multiple"
// covers every earlier one still unsettled on the channel, which are this batch's (the
// batches before it were settled, the undecodable ones of this batch were nacked and
// another store's acknowledged one by one).
func ackAll(ds []amqp.Delivery) error {
	if len(ds) == 0 {
		return nil
	}
	return ds[len(ds)-1].Ack(true)
}

// afterCommit runs the projector's after-commit work for what was delivered of its share
// (nothing when it had none). applied, when not nil, holds what the committed
// transaction applied of it (*applied may be empty: every event was skipped).
func (r *Runner) afterCommit(ctx context.Context, p Projector, delivered []events.Envelope, applied *[]events.Envelope) error {
	ac, ok := p.(AfterCommitter)
	if !ok || len(delivered) == 0 {
		return nil
	}
	// Applied events read from the log to fill a gap belong to delivered streams.
	var err error
	if aac, ok := ac.(AppliedAfterCommitter); ok && applied != nil {
		err = aac.AfterApplied(ctx, delivered, *applied)
	} else {
		err = ac.AfterCommit(ctx, delivered)
	}
	if err != nil {
		r.log.Warn("after-commit work failed: the batch comes back", "error", err)
	}
	return err
}

// afterOwnCommit is afterCommit for a transaction the consumer committed and settles
// itself (a failed batch applied again): the commit is made durable first, when there is
// after-commit work to do. Its acknowledgement waits for durable too.
func (r *Runner) afterOwnCommit(ctx context.Context, p Projector, delivered []events.Envelope) error {
	if _, ok := p.(AfterCommitter); !ok || len(delivered) == 0 {
		return nil
	}
	if err := r.durable(ctx); err != nil {
		return err
	}
	return r.afterCommit(ctx, p, delivered, nil)
}

// applyWaiting applies the shares of envs, trying again with a growing pause while the
// database is unavailable, until stop, and returns what the committed transaction
// applied of each share.
func (r *Runner) applyWaiting(ctx context.Context, stop <-chan struct{}, shares []share, envs []events.Envelope) ([][]events.Envelope, error) {
	return retry.Hold(stop, db.IsUnavailable,
		func(err error, d time.Duration) {
			r.log.Warn("database unavailable: holding the batch", "error", err, "size", len(envs), "retry_in", d)
		},
		func() ([][]events.Envelope, error) { return r.commitBatch(ctx, shares, envs) })
}

// commitBatch applies each share of envs to its projector, all in one transaction, commits
// it, and returns what it applied of each share.
func (r *Runner) commitBatch(ctx context.Context, shares []share, envs []events.Envelope) ([][]events.Envelope, error) {
	b, err := r.prepareBatch(ctx, shares, envs, nil)
	if err != nil {
		return nil, err
	}
	faults.Crash("projector.batch")
	outcome, err := b.sendCommit(ctx)
	if err == nil {
		err = outcome()
	}
	if err != nil {
		b.abandon(ctx)
		return nil, err
	}
	r.committed(ctx, b)
	return b.each, nil
}

// preparedBatch is a batch applied in its transaction, not yet committed.
type preparedBatch struct {
	c      *pgxpool.Conn
	pipe   *pipeTx // nil: nothing was applied, nothing to commit
	shares []share
	each   [][]events.Envelope // what each share applied
	work   *batchWork
	start  time.Time
}

// prepareBatch applies each share of envs to its projector, all in one transaction, up to
// its commit. before, when set, is called before the transaction sends anything after its
// prelude (pipeTx.before). On error nothing is left open.
func (r *Runner) prepareBatch(ctx context.Context, shares []share, envs []events.Envelope, before func() error) (*preparedBatch, error) {
	for _, sh := range shares {
		for _, i := range sh.idx {
			if faults.Poisoned(sh.p.Name(), envs[i].Data) {
				return nil, fmt.Errorf("chaos: event %s is poison to %s", envs[i].ID, sh.p.Name())
			}
		}
	}
	start := time.Now()
	c, err := r.acquire(ctx, before != nil)
	if err != nil {
		return nil, err
	}
	// Every member's share in one transaction, with the round trips of one (applyMembers).
	var ms []*memberBatch
	var of []int // the share of each of ms
	for i, sh := range shares {
		if len(sh.idx) > 0 {
			ms = append(ms, newMemberBatch(sh.p, pick(envs, sh.idx), PositionsKey(sh.p.Name(), r.n, r.k)))
			of = append(of, i)
		}
	}
	_, group := r.p.(*Group)
	actx, work := withWork(ctx)
	pipe, applied, err := applyMembers(actx, c.Conn(), nil, ms, group, r.cfg.DeferFlush, before)
	b := &preparedBatch{c: c, pipe: pipe, shares: shares, work: work, start: start}
	if err != nil {
		b.abandon(ctx)
		return nil, err
	}
	b.each = make([][]events.Envelope, len(shares))
	for j, i := range of {
		b.each[i] = applied[j]
	}
	return b, nil
}

// errNoSpareConn: no connection was free for a batch prepared while another commits.
var errNoSpareConn = errors.New("no spare connection")

// acquire takes a connection for a batch. For a batch prepared while another commits
// (spare), only one that is free, or frees up at once: waiting long for it, the runner
// would hold the committing batch's connection meanwhile, and runners that did so
// (partitions) could hold every connection of a small pool and wait for each other's.
func (r *Runner) acquire(ctx context.Context, spare bool) (*pgxpool.Conn, error) {
	if !spare {
		return r.pool.Acquire(ctx)
	}
	if st := r.pool.Stat(); st.IdleConns() == 0 && st.TotalConns() >= st.MaxConns() {
		return nil, errNoSpareConn
	}
	actx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	c, err := r.pool.Acquire(actx)
	if err != nil && ctx.Err() == nil {
		return nil, errNoSpareConn
	}
	return c, err
}

// sendCommit sends the batch's writes and COMMIT (pipeTx.sendCommit) and returns what
// reads the outcome. The batch's connection is busy until then.
func (b *preparedBatch) sendCommit(ctx context.Context) (func() error, error) {
	if b.pipe == nil {
		return func() error { return nil }, nil
	}
	return b.pipe.sendCommit(ctx)
}

// abandon rolls back a batch that is not committed, or whose commit failed, and gives
// its connection back.
func (b *preparedBatch) abandon(ctx context.Context) {
	if b.pipe != nil {
		_ = b.pipe.Rollback(ctx)
	}
	b.c.Release()
}

// committed gives a committed batch's connection back, and counts, notifies and traces
// what it applied.
func (r *Runner) committed(ctx context.Context, b *preparedBatch) {
	b.c.Release()
	now := time.Now()
	took := now.Sub(b.start)
	notified := make([]string, 0, len(b.shares)+len(b.work.names))
	for i, sh := range b.shares {
		if len(sh.idx) == 0 {
			continue
		}
		r.cfg.Metrics.Applied(sh.p.Name(), len(b.each[i]), took)
		applied := b.each[i]
		r.cfg.Metrics.AppliedAges(sh.p.Name(), now, len(applied), func(j int) time.Time { return applied[j].OccurredAt })
		if len(applied) > 0 {
			notified = append(notified, sh.p.Name())
			r.cfg.Applied.Reached(sh.p.Name(), applied)
		}
		r.trace(ctx, sh.p, applied)
	}
	r.cfg.Applied.Applied(append(notified, b.work.names...)...)
}

// trace logs each event p applied at debug level, one line per event with its
// correlation id, so that one request can be followed through every projector.
func (r *Runner) trace(ctx context.Context, p Projector, applied []events.Envelope) {
	if !r.log.Enabled(ctx, slog.LevelDebug) {
		return
	}
	log := r.log
	if p.Name() != r.p.Name() { // not p != r.p: a projector may be a value of an uncomparable type
		log = log.With("projector", p.Name())
	}
	for _, e := range applied {
		log.LogAttrs(ctx, slog.LevelDebug, "event applied", slog.String("event_id", e.ID.String()),
			slog.String("type", e.Type), slog.Int64("position", e.Position),
			slog.String("correlation_id", e.CorrelationID), slog.String("causation_id", e.CausationID))
	}
}

// ApplyBatch applies events to p in one transaction: duplicates and already applied
// versions are skipped, a missing earlier version is read from the event store and
// applied first. It returns what was applied, in order.
func ApplyBatch(ctx context.Context, pool *pgxpool.Pool, p Projector, envs []events.Envelope) (applied []events.Envelope, err error) {
	return applyBatch(ctx, pool, p, envs, p.Name())
}

// applyBatch is ApplyBatch advancing the positions row named positions.
func applyBatch(ctx context.Context, pool *pgxpool.Pool, p Projector, envs []events.Envelope, positions string) (applied []events.Envelope, err error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback(ctx)
		}
	}()
	if applied, err = applyInTx(ctx, tx, p, envs, positions); err != nil {
		return nil, err
	}
	faults.Crash("projector.batch")
	if err = tx.Commit(ctx); err != nil {
		return nil, err
	}
	return applied, nil
}

// applyInOrder applies envs to p in the order they came (the relay's commit order), not
// stream by stream: a projector may rely on one stream's event coming before another's
// (a conversation before its messages). Within a stream each version applies once and in
// order: current holds each stream's last applied version and is updated; an early later
// version has its predecessors read from the store first, and they are skipped when they
// come. It returns what it applied, in order. The live runtime and rebuilds share it.
//
// What to apply is settled first (the gaps read), then applied: by one ApplySet when the
// projector has it, else by Apply for each event.
func applyInOrder(ctx context.Context, tx pgx.Tx, p Projector, envs []events.Envelope, current map[uuid.UUID]int) ([]events.Envelope, error) {
	applied := make([]events.Envelope, 0, len(envs))
	for _, e := range envs {
		s, cur := e.StreamID, current[e.StreamID]
		if e.StreamVersion <= cur {
			continue // a duplicate, or already applied
		}
		if e.StreamVersion > cur+1 {
			missing, err := eventstore.ReadStream(ctx, tx, s, cur+1, e.StreamVersion-1)
			if err != nil {
				return nil, err
			}
			if len(missing) != e.StreamVersion-1-cur {
				return nil, fmt.Errorf("stream %s: versions %d..%d are missing from the event store",
					s, cur+1, e.StreamVersion-1)
			}
			applied = append(applied, missing...)
		}
		applied = append(applied, e)
		current[s] = e.StreamVersion
	}
	if sa, ok := p.(SetApplier); ok && len(applied) > 0 {
		if err := sa.ApplySet(ctx, tx, applied); err != nil {
			if len(applied) == 1 {
				e := applied[0]
				return nil, fmt.Errorf("apply %s %s v%d: %w", e.Type, e.StreamID, e.StreamVersion, err)
			}
			return nil, fmt.Errorf("apply %d events: %w", len(applied), err)
		}
		return applied, nil
	}
	for _, e := range applied {
		if err := p.Apply(ctx, tx, e); err != nil {
			return nil, fmt.Errorf("apply %s %s v%d: %w", e.Type, e.StreamID, e.StreamVersion, err)
		}
	}
	return applied, nil
}

// applyInTx is ApplyBatch inside a transaction; it advances the positions row named
// positions.
func applyInTx(ctx context.Context, tx pgx.Tx, p Projector, envs []events.Envelope, positions string) ([]events.Envelope, error) {
	pipe, applied, err := applyMembers(ctx, nil, tx, []*memberBatch{newMemberBatch(p, envs, positions)}, false, false, nil)
	if err == nil {
		err = pipe.flush(ctx)
	}
	if err != nil {
		return nil, err
	}
	return applied[0], nil
}

// memberBatch is one projector's share of a batch in the batch's transaction: its
// streams, the version each was at, and the row each new one got.
type memberBatch struct {
	p         Projector
	envs      []events.Envelope
	positions string
	// streams are the batch's streams in one lock order for every instance of the
	// projector, so two never deadlock; last is each one's highest version in the batch.
	streams []uuid.UUID
	last    map[uuid.UUID]int
	created map[uuid.UUID]bool // streams new to the projection: their rows were inserted
	current map[uuid.UUID]int  // each stream's applied version, as the apply goes on
	// prefetched gives the apply what the member read in the prelude (Prefetcher); nil
	// when it read nothing.
	prefetched func(context.Context) context.Context
}

func newMemberBatch(p Projector, envs []events.Envelope, positions string) *memberBatch {
	// Each stream's highest version in the batch: where the stream is new to the
	// projection, every one of its events up to it is applied (a gap is read from the
	// store), so that is the version its row ends at.
	m := &memberBatch{p: p, envs: envs, positions: positions, last: map[uuid.UUID]int{}, created: map[uuid.UUID]bool{}}
	for _, e := range envs {
		v, ok := m.last[e.StreamID]
		if !ok {
			m.streams = append(m.streams, e.StreamID)
		}
		m.last[e.StreamID] = max(v, e.StreamVersion)
	}
	slices.SortFunc(m.streams, func(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) })
	m.current = make(map[uuid.UUID]int, len(m.streams))
	return m
}

// queuePrelude queues the member's lock, its streams' rows and their versions, and what
// it prefetches (Prefetcher).
func (m *memberBatch) queuePrelude(b *pgx.Batch) {
	lasts := make([]int32, len(m.streams))
	for i, s := range m.streams {
		lasts[i] = int32(m.last[s])
	}
	// Shared with every other batch of the projector; a rebuild's swap takes it alone.
	b.Queue(`SELECT pg_advisory_xact_lock_shared($1)`, liveLockKey(m.p.Name()))
	// One statement gives each stream its row and its applied version. A stream new to the
	// projection gets its row here, at the version the batch leaves it at (inserted at 0
	// and raised after the apply, each new stream's row would be written twice, and most
	// events start a stream); the row is this transaction's until it commits, so another
	// instance's insert of the same stream waits for it, then finds the row. A stream that
	// has its row already is the conflict: the update keeps its version and holds the row
	// for the rest of the transaction, as FOR UPDATE would, with no second probe of the
	// index for each stream. RETURNING tells the two apart: a row this statement inserted
	// has no xmax. The arbiter index finds each row whatever the statistics say, and the
	// ids' sorted order makes instances take rows in one order.
	b.Queue(`INSERT INTO projection_streams AS ps (projection, stream_id, version)
		SELECT $1, u.s, u.v FROM unnest($2::uuid[], $3::int[]) AS u(s, v) ORDER BY u.s
		ON CONFLICT (projection, stream_id) DO UPDATE SET version = ps.version
		RETURNING stream_id, version, xmax = 0`, m.p.Name(), m.streams, lasts).
		Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var s uuid.UUID
				var v int
				var created bool
				if err := rows.Scan(&s, &v, &created); err != nil {
					return err
				}
				if created {
					m.created[s] = true
				} else {
					m.current[s] = v
				}
			}
			return rows.Err()
		})
	if pf, ok := m.p.(Prefetcher); ok {
		m.prefetched = pf.Prefetch(b, m.envs)
	}
}

// applyMembers applies each member's share in one transaction, in the members' order,
// and returns what each applied. The round trips are the batch's, not each member's:
// every member's prelude (its lock, its streams' rows and versions) goes in one, and the
// members' writes, stream versions and positions are pipelined together (pipe), sent
// with a read that needs them or with the commit. A group batch of one chatbot's
// creation for three members was nine round trips and is three
// (TestGroupBatchRoundTrips; BENCHMARKS.md has the figures).
//
// The transaction is tx, or, when tx is nil, one the prelude begins on conn, in the
// prelude's round trip (pgx.Batch.BeginTx). The returned pipe holds the last writes,
// still queued: the caller sends them with its COMMIT (pipe.sendCommit) or flushes them
// (pipe.flush) before it commits tx. pipe is nil only when no transaction was begun;
// after an error it is to be rolled back. before, when set, is called before anything
// after the prelude is sent (pipeTx.before).
//
// A member that is not Pipelined writes straight to the transaction, after what the
// members before it queued has been sent: each member sees every write of those before
// it, as when each was applied on its own. named puts the member's name on its errors
// (a group's); deferFlush commits without waiting for the disk and marks the transaction
// as never appending (Config.DeferFlush).
func applyMembers(ctx context.Context, conn *pgx.Conn, tx pgx.Tx, ms []*memberBatch, named, deferFlush bool, before func() error) (*pipeTx, [][]events.Envelope, error) {
	if len(ms) == 0 {
		return nil, nil, nil
	}
	var prelude pgx.Batch
	if tx == nil {
		prelude.BeginTx(pgx.TxOptions{})
	}
	if deferFlush {
		// Before any write: the mark is refused once the transaction has an id.
		prelude.Queue(`SELECT set_config('synchronous_commit', 'off', true), `+eventstore.NeverAppends,
			eventstore.NeverAppendsArgs()...)
	}
	for _, m := range ms {
		m.queuePrelude(&prelude)
	}
	var br pgx.BatchResults
	if tx == nil {
		br = conn.SendBatch(ctx, &prelude)
		tx = br.Tx()
	} else {
		br = tx.SendBatch(ctx, &prelude)
	}
	pipe := &pipeTx{Tx: tx, before: before}
	if err := br.Close(); err != nil {
		return pipe, nil, err
	}
	out := make([][]events.Envelope, len(ms))
	for i, m := range ms {
		mctx := ctx
		if m.prefetched != nil {
			mctx = m.prefetched(ctx)
		}
		applied, err := m.apply(mctx, pipe)
		if err != nil {
			if named {
				err = fmt.Errorf("%s: %w", m.p.Name(), err)
			}
			return pipe, nil, err
		}
		out[i] = applied
	}
	return pipe, out, nil
}

// apply applies the member's share after its prelude, and queues its stream versions
// and position into pipe.
func (m *memberBatch) apply(ctx context.Context, pipe *pipeTx) ([]events.Envelope, error) {
	// The streams the prelude inserted are at 0 in current, nothing of them applied yet.
	// Each stream's version before the apply, in m.streams' order: a slice, where a copy
	// of the map cost a map's allocation and hashing for every batch of every member.
	start := make([]int, len(m.streams))
	for i, s := range m.streams {
		start[i] = m.current[s]
	}
	// A rebuildable projector's writes are pipelined, as in a rebuild, and so are those of
	// a projector that says they may be (Pipelined). Their errors come back together at
	// the flush, and a failed batch is applied again one event at a time, which says
	// which event failed.
	var w pgx.Tx = pipe
	_, rebuildable := m.p.(Rebuildable)
	if _, pipelined := m.p.(Pipelined); !rebuildable && !pipelined {
		if err := pipe.flush(ctx); err != nil {
			return nil, err
		}
		w = pipe.Tx
	}
	applied, err := applyInOrder(ctx, w, m.p, m.envs, m.current)
	if err != nil {
		return nil, err
	}
	var changedIDs []uuid.UUID
	var changedVersions []int32
	for i, s := range m.streams {
		if m.current[s] != start[i] && !(m.created[s] && m.current[s] == m.last[s]) {
			changedIDs = append(changedIDs, s)
			changedVersions = append(changedVersions, int32(m.current[s]))
		}
	}
	if len(changedIDs) > 0 {
		// An upsert of rows that exist (and are locked): its arbiter index finds each row,
		// where an UPDATE … FROM unnest could be planned as a hash join over every stream.
		if _, err = pipe.Exec(ctx, `INSERT INTO projection_streams (projection, stream_id, version)
			SELECT $1, u.stream_id, u.version FROM unnest($2::uuid[], $3::int[]) AS u(stream_id, version)
			ON CONFLICT (projection, stream_id) DO UPDATE SET version = excluded.version`, m.p.Name(), changedIDs, changedVersions); err != nil {
			return nil, err
		}
	}
	if err = recordPosition(ctx, pipe, m.positions, applied); err != nil {
		return nil, err
	}
	return applied, nil
}

// recordPosition advances the projection's row (or its partition's, see PositionsKey) in
// projection_positions: its highest applied position, that event's time, and its count of
// applied events. It is the batch's last statement, so the row is locked only until the
// commit.
func recordPosition(ctx context.Context, tx pgx.Tx, projection string, applied []events.Envelope) error {
	if len(applied) == 0 {
		return nil
	}
	last := applied[0]
	for _, e := range applied[1:] {
		if e.Position > last.Position {
			last = e
		}
	}
	_, err := tx.Exec(ctx, `INSERT INTO projection_positions AS p (projection, position, last_event_at, events_applied, updated_at)
		VALUES ($1, $2, $3, $4, now())
		ON CONFLICT (projection) DO UPDATE SET
			last_event_at = CASE WHEN excluded.position > p.position THEN excluded.last_event_at ELSE p.last_event_at END,
			position = greatest(p.position, excluded.position),
			events_applied = p.events_applied + excluded.events_applied, updated_at = now()`,
		projection, last.Position, last.OccurredAt, len(applied))
	return err
}

// liveLockKey is the lock that each live batch of a projector holds shared and the swap
// holds exclusive.
func liveLockKey(projection string) int64 { return db.LockKey("chatbotd.projection." + projection) }
