package eventstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/broker"
	"github.com/chatbotsaas/chatbotd/internal/db"
	"github.com/chatbotsaas/chatbotd/internal/faults"
	"github.com/chatbotsaas/chatbotd/internal/metrics"
	"github.com/chatbotsaas/chatbotd/internal/retry"
)

// RelayConfig configures a Relay.
type RelayConfig struct {
	// Name keys the checkpoint and the leader lock; relays with one name share the work.
	Name           string
	Exchange       string
	BatchSize      int
	ConfirmTimeout time.Duration
	// IdleWait is the longest the relay sleeps without a notification; it bounds the delay
	// after a long transaction that blocked the read ends without a NOTIFY of its own.
	IdleWait time.Duration
	// Queues are declared (with their bindings) before anything is published, so that no
	// event reaches the exchange before the queues that must receive it exist.
	Queues []broker.QueueSpec
	// Declare, when set, declares the rest of the topology on the same occasions: the
	// partitioned projectors' queues, whose layout is kept in the database.
	Declare func(ctx context.Context, ch *amqp.Channel) error
	// Frames publishes each batch's events in frames too (broker.FrameHeader): one
	// message for a batch's events of one organization bucket, up to events.FrameMax, to
	// the frames exchange, with mandatory routing, for the projectors' group. The single
	// events, then, are for the queues that want them and nobody else: published without
	// mandatory routing, so that an event no reactor or outside consumer subscribed to is
	// dropped by the exchange rather than fail the batch. Without Frames every single
	// event must be routed.
	Frames bool
	// Local is the store this process appends with, if any: while the relay leads, the
	// store's commits wake it directly, and send no NOTIFY (Store.notify). Appends of
	// other processes still wake it through its LISTEN. A relay of another Name (serve
	// runs one name only) hears nothing of this process's commits meanwhile, and finds
	// them within its IdleWait. At most one relay a store.
	Local *Store
	// Tap, when set, is given every batch the relay reads, for the chainer of the same
	// process (Chainer.Tap).
	Tap     *Tap
	Logger  *slog.Logger
	Metrics *metrics.Metrics
}

func (c *RelayConfig) setDefaults() {
	if c.Name == "" {
		c.Name = "default"
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 500
	}
	if c.ConfirmTimeout <= 0 {
		c.ConfirmTimeout = 15 * time.Second
	}
	if c.IdleWait <= 0 {
		c.IdleWait = 2 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports every missing setting.
func (c RelayConfig) Validate() error {
	if c.Exchange == "" {
		return errors.New("relay: Exchange is required")
	}
	return nil
}

// Channeler opens broker channels.
type Channeler interface {
	Channel(ctx context.Context) (*amqp.Channel, error)
}

// Relay publishes committed events to the exchange in commit order. Only the instance that
// holds the leader lock publishes; the others wait and take over when it goes away. The
// checkpoint advances only after every message of a batch is confirmed and none that had
// to be routed (its frames, or its events without frames) was returned unroutable, so a
// crash at any moment re-publishes (at least once), never skips.
type Relay struct {
	pool   *pgxpool.Pool
	broker Channeler
	cfg    RelayConfig
	// afterConfirm, when set (tests), runs after a batch is confirmed and before its
	// checkpoint is saved; an error stops the relay there, as a crash would.
	afterConfirm func(ctx context.Context, batch []events.Envelope) error
	// leading, when set (tests, metrics), is told when leadership is won and lost.
	leading func(bool)
	// sent, when set (tests), is told how many events are in flight after each batch is sent.
	sent func(outstanding int)
	// idle, when set (tests), is called at each turn that found nothing to read.
	idle func()
}

// NewRelay returns a relay; Run starts it.
func NewRelay(pool *pgxpool.Pool, b Channeler, cfg RelayConfig) (*Relay, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Relay{pool: pool, broker: b, cfg: cfg}, nil
}

// Run relays until ctx ends. Failures (database or broker down) are logged and retried
// with backoff; Run returns nil when ctx is cancelled.
func (r *Relay) Run(ctx context.Context) error {
	var pause retry.Backoff
	for {
		err := r.lead(ctx)
		if ctx.Err() != nil {
			return nil
		}
		d := pause.Next()
		if err != nil {
			r.cfg.Logger.Warn("relay interrupted, retrying", "error", err, "in", d)
		}
		if !retry.Sleep(ctx.Done(), d) {
			return nil
		}
	}
}

func (r *Relay) lockKey() int64 { return db.LockKey("chatbotd.relay." + r.cfg.Name) }

// lead waits to become the leader and then relays until an error or ctx ends.
func (r *Relay) lead(ctx context.Context) error {
	pc, err := r.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// The lock and LISTEN are session state: the connection leaves the pool for good and
	// closing it releases both.
	conn := pc.Hijack()
	defer conn.Close(context.WithoutCancel(ctx))

	for {
		var got bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, r.lockKey()).Scan(&got); err != nil {
			return err
		}
		if got {
			break
		}
		select { // standby
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
	r.cfg.Logger.Info("relay is the leader", "name", r.cfg.Name)
	if r.leading != nil {
		r.leading(true)
		defer r.leading(false)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{NotifyChannel}.Sanitize()); err != nil {
		return err
	}
	// Listening already, so a commit just before this is heard as a NOTIFY.
	var local chan struct{}
	if r.cfg.Local != nil {
		local = make(chan struct{}, 1)
		r.cfg.Local.wakeHere(local)
		defer r.cfg.Local.wakeHere(nil)
	}
	store, err := Identity(ctx, conn)
	if err != nil {
		return err
	}
	pub, err := r.openPublisher(ctx)
	if err != nil {
		return err
	}
	defer pub.close()
	pub.store = &store

	cp, err := r.loadCheckpoint(ctx)
	if err != nil {
		return err
	}
	// Behind a full batch (a backlog), batches are published without waiting for the
	// confirms of the ones before: up to window events are in flight, so the broker's
	// confirm latency (a quorum queue's replication and fsync) and the checkpoint's
	// commit are not paid once per batch. Behind a batch that was not full, the relay
	// waits for its confirms before it reads again, and publishes what committed
	// meanwhile as one batch, as Nagle's algorithm holds small segments while one is
	// unacknowledged: a read at each commit sent the broker a batch of a few events
	// each time, and the broker's cost is mostly per batch (BENCHMARKS.md, "The relay
	// waits for a part batch's confirms"). The events held lose little: they would have
	// been confirmed after the batch in flight anyway, and a quorum queue hands a
	// message to its consumers only once a majority has written it, as for its confirm.
	// Confirms come back in publish order (amqp091 resequences them), so the oldest
	// batch is always the next to be wholly confirmed, and the checkpoint moves past a
	// batch only once it and every batch before it are. Under load the checkpoint is
	// saved at most every checkpointEvery (a crash re-publishes what was confirmed
	// since, at least once), and at once whenever the relay has nothing to read and
	// nothing in flight: not whenever nothing is in flight, which, with one part batch
	// in flight at a time, is after nearly every batch (a transaction for every few
	// events).
	window := 2 * r.cfg.BatchSize
	read := cp // where the next read starts: past everything published
	var pending []*inflight
	outstanding := 0
	saved, lastSave := cp, time.Now()
	save := func() error {
		if cp == saved {
			return nil
		}
		if err := r.saveCheckpoint(ctx, cp); err != nil {
			return err
		}
		saved, lastSave = cp, time.Now()
		return nil
	}
	// What was confirmed is recorded however the relay stops (a batch whose after-confirm
	// step failed is not: cp has not moved past it).
	defer func() { _ = save() }()
	finish := func() error {
		head := pending[0]
		if r.afterConfirm != nil {
			if err := r.afterConfirm(ctx, head.batch); err != nil {
				return err
			}
		}
		faults.Crash("relay.batch")
		pending, outstanding, cp = pending[1:], outstanding-len(head.batch), head.next
		r.published(ctx, head)
		if time.Since(lastSave) >= checkpointEvery {
			return save()
		}
		return nil
	}
	full := false // the last read filled a batch: more may be waiting
	for {
		if outstanding < window && (len(pending) == 0 || full) {
			batch, next, err := ReadCommitted(ctx, r.pool, read, r.cfg.BatchSize)
			if err != nil {
				return err
			}
			full = len(batch) == r.cfg.BatchSize
			if len(batch) > 0 {
				r.cfg.Tap.offer(read, next, batch)
				r.cfg.Metrics.RelayAges("read", time.Now(), len(batch), func(i int) time.Time { return batch[i].OccurredAt })
				messages, err := pub.send(ctx, batch)
				if err != nil {
					return err
				}
				pending = append(pending, &inflight{batch: batch, messages: messages, next: next, sent: time.Now()})
				outstanding += len(batch)
				read = next
				if r.sent != nil {
					r.sent(outstanding)
				}
				for len(pending) > 0 { // settle what is confirmed already, without waiting
					done, err := pub.confirm(pending[0], false)
					if err != nil {
						return err
					}
					if !done {
						break
					}
					if err := finish(); err != nil {
						return err
					}
				}
				continue
			}
		}
		if len(pending) > 0 {
			// Nothing more to read yet, the window is full, or the batch in flight was not
			// full: wait for the oldest batch. What was confirmed before it is saved once
			// the checkpoint is due, if this wait lasts that long: a broker that stops
			// confirming (a disk alarm, a stall) must not keep confirmed progress unsaved
			// until the confirm timeout ends the relay's turn.
			if cp != saved {
				due := time.NewTimer(time.Until(lastSave.Add(checkpointEvery)))
				done, err := pub.confirmBefore(pending[0], true, due.C)
				due.Stop()
				if err != nil {
					return err
				}
				if !done {
					if err := save(); err != nil {
						return err
					}
				}
			}
			if _, err := pub.confirm(pending[0], true); err != nil {
				return err
			}
			if err := finish(); err != nil {
				return err
			}
			continue
		}
		// Nothing readable and nothing in flight: the checkpoint is the last confirmed
		// event's from here on. Rows after it that are not readable yet belong to
		// transactions behind a running one: look again soon. Otherwise sleep until a
		// commit notifies us.
		if err := save(); err != nil {
			return err
		}
		var one int
		err := r.pool.QueryRow(ctx, behindQuery, strconv.FormatUint(cp.TransactionID, 10), cp.Position).Scan(&one)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		behind := err == nil
		if r.idle != nil {
			r.idle()
		}
		wait := r.cfg.IdleWait
		if behind {
			wait = 5 * time.Millisecond
		}
		n, woken, err := waitForCommit(ctx, conn, local, wait)
		if err == nil && n != nil {
			err = drainNotifications(ctx, conn)
		}
		if err != nil && ctx.Err() != nil {
			return nil
		}
		if err != nil && !woken && !pgconn.Timeout(err) {
			return fmt.Errorf("wait for notification: %w", err)
		}
	}
}

// waitForCommit waits at most wait for a NOTIFY on conn or a wake-up on local (a commit
// of this process; nil: none). woken says the wait was cut short by local: its error is
// the cancelled wait's, and the connection is fine (pgconn ends a wait at its context's
// end with a deadline, and keeps the connection).
func waitForCommit(ctx context.Context, conn *pgx.Conn, local <-chan struct{}, wait time.Duration) (n *pgconn.Notification, woken bool, err error) {
	if local != nil {
		select {
		case <-local:
			return nil, true, nil
		default:
		}
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var heard atomic.Bool
	if local != nil {
		done := make(chan struct{})
		defer close(done)
		go func() {
			select {
			case <-local:
				heard.Store(true)
				cancel()
			case <-done:
			}
		}()
	}
	n, err = conn.WaitForNotification(wctx)
	return n, heard.Load(), err
}

// behindQuery finds a row after the checkpoint. It walks the commit-order index (ORDER BY
// its columns, LIMIT 1) and stops at the first row, whatever the statistics say. Written
// as EXISTS, on a log that had grown since it was last analyzed (the planner then
// guesses that a third of the rows match), it was planned as a sequential scan, which
// found nothing after reading every row: 10 ms at 34,000 events, on every idle turn.
const behindQuery = `SELECT 1 FROM events WHERE (transaction_id, position) > ($1::text::xid8, $2::bigint)
	ORDER BY transaction_id, position LIMIT 1`

// drainNotifications takes the notifications that have arrived already, for at most a
// few milliseconds: the one wake-up covers them all, since the next read sees every
// commit they announce. Taken one a turn, the NOTIFYs sent while the relay was busy
// publishing (one per group commit) kept it turning, two queries a turn, long after the
// load had ended: 60 to 120 turns a second for half a minute after a benchmark's
// commands, with PostgreSQL busy the whole time.
func drainNotifications(ctx context.Context, conn *pgx.Conn) error {
	start := time.Now()
	for time.Since(start) < 5*time.Millisecond {
		dctx, cancel := context.WithTimeout(ctx, time.Millisecond)
		_, err := conn.WaitForNotification(dctx)
		cancel()
		if err != nil {
			if pgconn.Timeout(err) && ctx.Err() == nil {
				return nil // none left
			}
			return err
		}
	}
	return nil
}

// published counts a confirmed batch, how long its confirms took (as far as the relay
// saw: a confirm that came while it read the next batch is seen after the read) and its
// events' ages, and traces each event at debug level, with its correlation id, so that
// one request can be followed from the API to the projectors.
func (r *Relay) published(ctx context.Context, b *inflight) {
	now := time.Now()
	r.cfg.Metrics.Published(len(b.batch), now.Sub(b.sent))
	r.cfg.Metrics.RelayAges("confirmed", now, len(b.batch), func(i int) time.Time { return b.batch[i].OccurredAt })
	if !r.cfg.Logger.Enabled(ctx, slog.LevelDebug) {
		return
	}
	for _, e := range b.batch {
		r.cfg.Logger.LogAttrs(ctx, slog.LevelDebug, "event published", slog.String("event_id", e.ID.String()),
			slog.String("type", e.Type), slog.Int64("position", e.Position),
			slog.String("correlation_id", e.CorrelationID), slog.String("causation_id", e.CausationID))
	}
}

// RelayStatus is how far the relay is behind the log.
type RelayStatus struct {
	Position int64 `json:"position"`
	// Behind counts committed events not yet published (counted up to 1,000,000).
	Behind int64 `json:"events_behind"`
	// LagSeconds is the age of the oldest event not yet published (0 when none is).
	LagSeconds float64    `json:"lag_seconds"`
	UpdatedAt  *time.Time `json:"updated_at"`
}

// RelayLag reads the status of the relay called name ("" for the default one).
func RelayLag(ctx context.Context, q Querier, name string) (RelayStatus, error) {
	if name == "" {
		name = "default"
	}
	var st RelayStatus
	var txid string
	err := q.QueryRow(ctx, `SELECT coalesce(max(transaction_id::text), '0'), coalesce(max(position), 0), max(updated_at)
		FROM relay_checkpoints WHERE name = $1`, name).Scan(&txid, &st.Position, &st.UpdatedAt)
	if err != nil {
		return st, db.Classify(err)
	}
	var oldest *time.Time
	err = q.QueryRow(ctx, `SELECT (SELECT count(*) FROM (SELECT 1 FROM events
			WHERE (transaction_id, position) > ($1::text::xid8, $2::bigint) LIMIT 1000000) AS b),
		(SELECT occurred_at FROM events WHERE (transaction_id, position) > ($1::text::xid8, $2::bigint)
			ORDER BY transaction_id, position LIMIT 1)`, txid, st.Position).Scan(&st.Behind, &oldest)
	if err != nil {
		return st, db.Classify(err)
	}
	if oldest != nil {
		st.LagSeconds = max(0, time.Since(*oldest).Seconds())
	}
	return st, nil
}

func (r *Relay) loadCheckpoint(ctx context.Context) (Checkpoint, error) {
	return loadCheckpoint(ctx, r.pool, r.cfg.Name)
}

func (r *Relay) saveCheckpoint(ctx context.Context, cp Checkpoint) error {
	// Saved even when ctx was just cancelled: the batch is confirmed, and recording that
	// saves a re-publish.
	ctx = context.WithoutCancel(ctx)
	// Committed without waiting for the disk: a checkpoint lost with a crash of PostgreSQL
	// only makes the relay publish again what it had published since the one before (at
	// least once, never a gap). Waiting held the relay's loop for an fsync after each
	// batch it drained, and for as long as the disk stalled, and those commits were
	// nearly a fifth of those that waited for the disk at 1,200 commands/s. One round
	// trip: a batch is one implicit transaction, to which the local setting applies. It
	// never appends, and readers in commit order need not wait for it (NeverAppends).
	b := &pgx.Batch{}
	b.Queue(`SELECT set_config('synchronous_commit', 'off', true), `+NeverAppends, NeverAppendsArgs()...)
	queueCheckpoint(b, r.cfg.Name, cp)
	return db.Classify(r.pool.SendBatch(ctx, b).Close())
}

// publisher is one confirm-mode channel.
type publisher struct {
	ch       *amqp.Channel
	exchange string
	store    *uuid.UUID // stamped on every envelope
	frames   bool
	confirms chan amqp.Confirmation
	returns  chan amqp.Return
	closed   chan *amqp.Error
	timeout  time.Duration
	cork     func() (uncork func()) // nil: each publish leaves at once
}

// Corker is a Channeler whose connection can hold a burst of publishes back and send
// them together (broker.Conn).
type Corker interface {
	Cork() (uncork func())
}

func (r *Relay) openPublisher(ctx context.Context) (*publisher, error) {
	ch, err := r.broker.Channel(ctx)
	if err != nil {
		return nil, err
	}
	if err := broker.DeclareEventExchange(ch, r.cfg.Exchange); err != nil {
		ch.Close()
		return nil, err
	}
	for _, q := range r.cfg.Queues {
		if err := broker.DeclareQueue(ch, q); err != nil {
			ch.Close()
			return nil, err
		}
	}
	if r.cfg.Declare != nil {
		if err := r.cfg.Declare(ctx, ch); err != nil {
			ch.Close()
			return nil, err
		}
	}
	if err := ch.Confirm(false); err != nil {
		ch.Close()
		return nil, fmt.Errorf("confirm mode: %w", err)
	}
	n := 3*r.cfg.BatchSize + 1 // the most in flight: a window of 2 batches, and one more read
	if r.cfg.Frames {
		n *= 2 // and a frame for each event, at most
	}
	var cork func() func()
	if c, ok := r.broker.(Corker); ok {
		cork = c.Cork
	}
	return &publisher{
		cork:     cork,
		ch:       ch,
		exchange: r.cfg.Exchange,
		frames:   r.cfg.Frames,
		confirms: ch.NotifyPublish(make(chan amqp.Confirmation, n)),
		returns:  ch.NotifyReturn(make(chan amqp.Return, n)),
		closed:   ch.NotifyClose(make(chan *amqp.Error, 1)),
		timeout:  r.cfg.ConfirmTimeout,
	}, nil
}

func (p *publisher) close() { _ = p.ch.Close() }

// partitionHeaders are the headers of each bucket, made once: the relay publishes every
// event with one, and amqp091 only reads them.
var partitionHeaders = func() (out [events.PartitionBuckets]amqp.Table) {
	for b := range out {
		out[b] = amqp.Table{events.PartitionHeader: events.PartitionValue(b)}
	}
	return out
}()

// checkpointEvery is how often, at most, the checkpoint is saved while the relay has
// events to publish.
const checkpointEvery = 100 * time.Millisecond

// inflight is a published batch and how many of its confirms have come back.
type inflight struct {
	batch    []events.Envelope
	messages int // what send published: the events, and their frames
	next     Checkpoint
	acked    int
	sent     time.Time
}

// frame is a frame being built: events of one bucket.
type frame struct {
	bucket int
	body   []byte
	events int
	first  events.Envelope
}

// framer gathers a batch's events into frames: one bucket's events in each, in the order
// of the log, FrameMax at most.
type framer struct {
	frames map[int]*frame
	order  []int // buckets in the order of their first event of the batch
}

// add puts e (body is its encoding) into its bucket's frame; it returns the frame when
// that is full, to be published now (the framer starts a new one for the bucket).
func (fr *framer) add(e events.Envelope, body []byte, bucket int) *frame {
	if fr.frames == nil {
		fr.frames = make(map[int]*frame)
	}
	f := fr.frames[bucket]
	if f == nil {
		f = &frame{bucket: bucket}
		fr.frames[bucket] = f
		fr.order = append(fr.order, bucket)
	}
	if f.events == 0 {
		f.first = e
	}
	f.body = events.AppendFrame(f.body, body)
	f.events++
	if f.events < events.FrameMax {
		return nil
	}
	full := *f
	*f = frame{bucket: bucket}
	return &full
}

// rest are the frames not yet full, in the order of their buckets' first events.
func (fr *framer) rest() []*frame {
	var out []*frame
	for _, b := range fr.order {
		if f := fr.frames[b]; f.events > 0 {
			out = append(out, f)
		}
	}
	return out
}

// eventMessage is the message that carries e alone; body is its encoding.
func eventMessage(e events.Envelope, body []byte, bucket int) amqp.Publishing {
	return amqp.Publishing{
		// The organization's bucket, which partitioned projectors' queues are bound by.
		Headers:       partitionHeaders[bucket],
		ContentType:   "application/json",
		DeliveryMode:  amqp.Persistent,
		MessageId:     e.ID.String(),
		CorrelationId: e.CorrelationID,
		Type:          e.Type,
		Timestamp:     e.OccurredAt,
		Body:          body,
	}
}

// frameMessage is the message that carries frame f.
func frameMessage(f *frame) amqp.Publishing {
	return amqp.Publishing{
		// The bucket's header routes it as its events would be (broker.Layout).
		Headers: amqp.Table{events.PartitionHeader: partitionHeaders[f.bucket][events.PartitionHeader],
			broker.FrameHeader: int32(f.events)},
		ContentType:   "application/json",
		DeliveryMode:  amqp.Persistent,
		MessageId:     "frame:" + f.first.ID.String(),
		CorrelationId: f.first.CorrelationID,
		Timestamp:     f.first.OccurredAt,
		Body:          events.CloseFrame(f.body),
	}
}

// send publishes the batch, and its frames with Frames, without waiting for the confirms.
// It returns how many messages it published. The publishes leave together, when the
// broker's connection can hold them back (broker.Conn.Cork).
func (p *publisher) send(ctx context.Context, batch []events.Envelope) (int, error) {
	if p.cork != nil {
		defer p.cork()()
	}
	var fr framer
	sent := 0
	for _, e := range batch {
		e.StoreID = p.store
		// MarshalJSON rather than json.Marshal: the same bytes, without checking and
		// compacting them a second time, which was more than half of the encoding's cost.
		body, err := e.MarshalJSON()
		if err != nil {
			return sent, fmt.Errorf("encode event %s: %w", e.ID, err)
		}
		bucket := events.PartitionBucket(e.OrganizationID)
		if err := p.ch.PublishWithContext(ctx, p.exchange, e.Type, !p.frames, false, eventMessage(e, body, bucket)); err != nil {
			return sent, fmt.Errorf("publish event %s: %w", e.ID, err)
		}
		sent++
		if !p.frames {
			continue
		}
		if f := fr.add(e, body, bucket); f != nil {
			if err := p.sendFrame(ctx, f); err != nil {
				return sent, err
			}
			sent++
		}
	}
	for _, f := range fr.rest() {
		if err := p.sendFrame(ctx, f); err != nil {
			return sent, err
		}
		sent++
	}
	return sent, nil
}

// sendFrame publishes f with mandatory routing: the projectors must have it.
func (p *publisher) sendFrame(ctx context.Context, f *frame) error {
	if err := p.ch.PublishWithContext(ctx, broker.FramesExchange(p.exchange), "", true, false, frameMessage(f)); err != nil {
		return fmt.Errorf("publish the frame of event %s: %w", f.first.ID, err)
	}
	return nil
}

// confirm counts the confirms of b, the oldest batch in flight, and reports whether it
// is wholly confirmed; with block it waits (up to the confirm timeout) until it is. A
// nack, a returned (unroutable) message, a closed channel or a timeout is an error: the
// relay then starts again from its checkpoint and publishes again, since duplicates are
// allowed and loss is not.
func (p *publisher) confirm(b *inflight, block bool) (bool, error) {
	return p.confirmBefore(b, block, nil)
}

// confirmBefore is confirm, whose wait also ends, with false and no error, when due
// fires (nil: never).
func (p *publisher) confirmBefore(b *inflight, block bool, due <-chan time.Time) (bool, error) {
	var deadline <-chan time.Time
	if block {
		t := time.NewTimer(p.timeout)
		defer t.Stop()
		deadline = t.C
	}
	for b.acked < b.messages {
		var c amqp.Confirmation
		var ok bool
		if block {
			select {
			case c, ok = <-p.confirms:
			case err := <-p.closed:
				return false, fmt.Errorf("channel closed while waiting for confirms: %v", err)
			case <-deadline:
				return false, errors.New("timed out waiting for publisher confirms")
			case <-due:
				return false, nil
			}
		} else {
			select {
			case c, ok = <-p.confirms:
			case err := <-p.closed:
				return false, fmt.Errorf("channel closed while waiting for confirms: %v", err)
			default:
				return false, nil
			}
		}
		if !ok {
			return false, errors.New("channel closed while waiting for confirms")
		}
		if !c.Ack {
			return false, fmt.Errorf("broker nacked delivery %d", c.DeliveryTag)
		}
		b.acked++
	}
	// RabbitMQ sends basic.return before the basic.ack of the same message, and amqp091
	// dispatches frames in order, so every return for this batch is queued by now (one
	// of a later batch may be too: it fails this one, and both are published again).
	select {
	case ret := <-p.returns:
		return false, fmt.Errorf("message %s (%s %s) was unroutable: %s", ret.MessageId, ret.Exchange, ret.RoutingKey, ret.ReplyText)
	default:
	}
	return true, nil
}
