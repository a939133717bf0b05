package projections

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/broker"
	"github.com/chatbotsaas/chatbotd/internal/db"
)

// Tracked is a consumer whose progress operators watch: a projector (which records its
// position) or a worker queue (which does not).
type Tracked struct {
	Name        string
	Queue       broker.QueueSpec
	Positions   bool // records its progress in projection_positions
	Rebuildable bool
	// Partitioned consumers may be split over several queues (see Partitions): their
	// status sums the queues of the recorded layout, and of the layout being drained.
	Partitioned bool
	// Layout names the layout the queues follow (projection_layouts): the group's
	// (GroupName) for a member of it; empty for the consumer's own.
	Layout string
}

// layout is the name t's layout is recorded under.
func (t Tracked) layout() string {
	if t.Layout != "" {
		return t.Layout
	}
	return t.Name
}

// queues are the names of t's queues in the recorded layouts.
func (t Tracked) queues(layouts map[string]layoutRow) []string {
	if !t.Partitioned {
		return []string{t.Queue.Name}
	}
	row := rowOf(layouts, t.layout())
	var out []string
	for _, n := range []int{row.draining, row.partitions} {
		if n > 0 {
			for _, q := range layoutOf(t.Queue, n).Queues() {
				out = append(out, q.Name)
			}
		}
	}
	return out
}

// Status is where one projection (or consumer) is. The broker's figures are nil while the
// broker cannot be asked.
type Status struct {
	Name        string `json:"name"`
	Queue       string `json:"queue"`
	Rebuildable bool   `json:"rebuildable"`
	// Position is the highest log position applied (nil for consumers that keep none, or
	// before the first event).
	Position      *int64     `json:"position"`
	LastEventAt   *time.Time `json:"last_event_at"`
	EventsApplied int64      `json:"events_applied"`
	UpdatedAt     *time.Time `json:"updated_at"`
	// Partitions is how many queues the consumer's events are split over (the recorded
	// layout, see Partitions), and Draining the count of a former layout whose queues are
	// still consumed before the new ones.
	Partitions int  `json:"partitions"`
	Draining   *int `json:"draining,omitempty"`
	// Queued counts the messages waiting in the queue (in every partition's). A member of
	// the group counts the group's queue, which holds every member's events in frames of
	// up to events.FrameMax: there it counts frames, not events; LagSeconds says how far
	// behind the projection is either way.
	Queued       *int `json:"queued"`
	Consumers    *int `json:"consumers"`
	DeadLettered *int `json:"dead_lettered"`
	// LagSeconds is the age of the oldest event the projection has not applied yet, 0 when
	// its queue is empty (nil when unknown).
	LagSeconds *float64 `json:"lag_seconds"`
	// SweptAt is when the sweep (Sweep) last finished a pass over the consumer, and
	// EventsRedriven counts the events it found missing and published again to the
	// consumer's queue: events the broker lost, or that a stalled consumer held (see
	// Sweep). The sweep goes over a runtime's queue (the group's for its members) and the
	// webhook responder's: a member's line has neither.
	SweptAt        *time.Time `json:"swept_at"`
	EventsRedriven int64      `json:"events_redriven"`
}

// Statuses reads every tracked consumer's status: positions from the database, queue
// depths from the broker. A broker that does not answer within ctx leaves the broker's
// figures nil; a database error is returned.
func Statuses(ctx context.Context, pool *pgxpool.Pool, b eventstore.Channeler, tracked []Tracked) ([]Status, error) {
	type row struct {
		position      int64
		lastEventAt   time.Time
		eventsApplied int64
		updatedAt     time.Time
	}
	// A partitioned projector has a row per partition (PositionsKey): its position is the
	// highest, its count the sum.
	rows, err := pool.Query(ctx, `SELECT split_part(projection, '#', 1), max(position),
			(array_agg(last_event_at ORDER BY position DESC))[1], sum(events_applied)::bigint, max(updated_at)
		FROM projection_positions GROUP BY 1`)
	if err != nil {
		return nil, db.Classify(err)
	}
	positions := map[string]row{}
	for rows.Next() {
		var name string
		var r row
		if err := rows.Scan(&name, &r.position, &r.lastEventAt, &r.eventsApplied, &r.updatedAt); err != nil {
			rows.Close()
			return nil, db.Classify(err)
		}
		positions[name] = r
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, db.Classify(err)
	}
	type swept struct {
		at       *time.Time
		redriven int64
	}
	sweeps := map[string]swept{}
	rows, err = pool.Query(ctx, `SELECT name, swept_at, redriven FROM projection_sweeps`)
	if err != nil {
		return nil, db.Classify(err)
	}
	for rows.Next() {
		var name string
		var sw swept
		if err := rows.Scan(&name, &sw.at, &sw.redriven); err != nil {
			rows.Close()
			return nil, db.Classify(err)
		}
		sweeps[name] = sw
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, db.Classify(err)
	}
	layouts, err := readLayouts(ctx, pool)
	if err != nil {
		return nil, db.Classify(err)
	}
	depths := queueDepths(ctx, b, tracked, layouts)
	out := make([]Status, 0, len(tracked))
	for _, t := range tracked {
		st := Status{Name: t.Name, Queue: t.Queue.Name, Rebuildable: t.Rebuildable, Partitions: 1}
		if t.Partitioned {
			row := rowOf(layouts, t.layout())
			st.Partitions = row.partitions
			if row.draining > 0 {
				st.Draining = &row.draining
			}
		}
		if sw, ok := sweeps[t.Name]; ok {
			st.SweptAt, st.EventsRedriven = sw.at, sw.redriven
		}
		if r, ok := positions[t.Name]; ok {
			st.Position, st.LastEventAt, st.EventsApplied, st.UpdatedAt = &r.position, &r.lastEventAt, r.eventsApplied, &r.updatedAt
		}
		if d, ok := depths[t.Name]; ok {
			st.Queued, st.Consumers, st.DeadLettered = &d.queued, &d.consumers, &d.dead
			if t.Positions {
				lag, err := lagSeconds(ctx, pool, t.Queue.Bindings, st.Position, d.queued)
				if err != nil {
					return nil, err
				}
				st.LagSeconds = &lag
			}
		}
		out = append(out, st)
	}
	return out, nil
}

type depth struct{ queued, consumers, dead int }

// queueDepths asks the broker for each consumer's ready messages and consumers, summed
// over its queues, and for its dead-letter queue's messages, by passive declarations (a
// queue not declared yet counts as empty). It gives up, returning what it has, when the
// broker does not answer.
func queueDepths(ctx context.Context, b eventstore.Channeler, tracked []Tracked, layouts map[string]layoutRow) map[string]depth {
	out := map[string]depth{}
	var ch *amqp.Channel
	defer func() {
		if ch != nil {
			_ = ch.Close()
		}
	}()
	inspect := func(name string) (amqp.Queue, bool) {
		if ch == nil || ch.IsClosed() {
			var err error
			if ch, err = b.Channel(ctx); err != nil {
				return amqp.Queue{}, false
			}
		}
		q, err := ch.QueueDeclarePassive(name, true, false, false, false, nil)
		if err != nil {
			var ae *amqp.Error
			if errors.As(err, &ae) && ae.Code == amqp.NotFound {
				return amqp.Queue{Name: name}, true // not declared yet: nothing waits in it
			}
			return amqp.Queue{}, false
		}
		return q, true
	}
	for _, t := range tracked {
		var d depth
		for _, name := range t.queues(layouts) {
			q, ok := inspect(name)
			if !ok {
				return out
			}
			d.queued += q.Messages
			d.consumers += q.Consumers
		}
		dq, ok := inspect(t.Queue.DeadQueue())
		if !ok {
			return out
		}
		d.dead = dq.Messages
		out[t.Name] = d
	}
	return out
}

// lagScan bounds the events lagSeconds reads past a projection's position.
const lagScan = 5000

// lagSeconds is the age of the oldest event after position that the queue's bindings
// route to the projection, when events wait in its queue. Past lagScan events it gives
// the age of the last one read: a lower bound, large enough to alarm.
func lagSeconds(ctx context.Context, pool *pgxpool.Pool, bindings []string, position *int64, queued int) (float64, error) {
	if queued == 0 {
		return 0, nil
	}
	after := int64(0)
	if position != nil {
		after = *position
	}
	match := events.TopicMatcher(bindings)
	rows, err := pool.Query(ctx, `SELECT type, occurred_at FROM events WHERE position > $1 ORDER BY position LIMIT $2`, after, lagScan)
	if err != nil {
		return 0, db.Classify(err)
	}
	defer rows.Close()
	var last time.Time
	for rows.Next() {
		var typ string
		if err := rows.Scan(&typ, &last); err != nil {
			return 0, db.Classify(err)
		}
		if match(typ) {
			return max(0, time.Since(last).Seconds()), nil
		}
	}
	if err := rows.Err(); err != nil {
		return 0, db.Classify(err)
	}
	if last.IsZero() {
		return 0, nil
	}
	return max(0, time.Since(last).Seconds()), nil
}

// DeadLetter is one event in a dead-letter queue.
type DeadLetter struct {
	EventID        string     `json:"event_id"`
	Type           string     `json:"type"`
	StreamID       string     `json:"stream_id"`
	StreamVersion  int        `json:"stream_version"`
	Position       int64      `json:"position"`
	OrganizationID string     `json:"organization_id,omitempty"`
	CorrelationID  *string    `json:"correlation_id"` // null when the event has none
	OccurredAt     *time.Time `json:"occurred_at"`
	// Reason is the broker's: "rejected" (the consumer gave up on it) or
	// "delivery_limit" (redelivered too often).
	Reason         string     `json:"reason"`
	DeadLetteredAt *time.Time `json:"dead_lettered_at"`
	// Undecodable is set when the message is not an event envelope, nor a frame of them.
	Undecodable bool `json:"undecodable,omitempty"`
	// Frame names the frame (broker.FrameHeader) that carried the event, when the whole
	// frame was dead-lettered (past the delivery limit, in the group's own dead letters):
	// its events are listed one by one, and are redriven together.
	Frame string `json:"frame,omitempty"`
}

// ListDeadLetters returns the events of up to limit messages of q's dead-letter queue,
// oldest first (a frame's each), and leaves them there: they are taken unacknowledged and
// returned when the channel closes.
func ListDeadLetters(ctx context.Context, b eventstore.Channeler, q broker.QueueSpec, limit int) ([]DeadLetter, error) {
	ch, err := b.Channel(ctx)
	if err != nil {
		return nil, err
	}
	defer ch.Close()
	out := []DeadLetter{}
	for range limit {
		m, ok, err := ch.Get(q.DeadQueue(), false)
		if err != nil {
			return nil, deadQueueError(q, err)
		}
		if !ok {
			break
		}
		out = append(out, deadLettersOf(m)...)
	}
	return out, nil
}

func deadQueueError(q broker.QueueSpec, err error) error {
	var ae *amqp.Error
	if errors.As(err, &ae) && ae.Code == amqp.NotFound {
		return fmt.Errorf("queue %s does not exist yet: %w", q.DeadQueue(), err)
	}
	return fmt.Errorf("read %s: %w", q.DeadQueue(), err)
}

// deadLettersOf is the dead letter m holds: its event, a frame's events, or what can be
// told of a message that is neither.
func deadLettersOf(m amqp.Delivery) []DeadLetter {
	envs, err := decodeDelivery(m)
	if err != nil {
		return []DeadLetter{deadLetterOf(m, nil, "")}
	}
	frame := ""
	if _, framed := m.Headers[broker.FrameHeader]; framed {
		frame = m.MessageId
	}
	out := make([]DeadLetter, len(envs))
	for i := range envs {
		out[i] = deadLetterOf(m, &envs[i], frame)
	}
	return out
}

// deadLetterOf is e, which m carried (nil: m could not be decoded), as a dead letter.
func deadLetterOf(m amqp.Delivery, e *events.Envelope, frame string) DeadLetter {
	d := DeadLetter{EventID: m.MessageId, Type: m.Type, Undecodable: true}
	if e != nil {
		at := e.OccurredAt.UTC()
		d = DeadLetter{EventID: e.ID.String(), Type: e.Type, StreamID: e.StreamID.String(), StreamVersion: e.StreamVersion,
			Position: e.Position, CorrelationID: events.OptionalID(e.CorrelationID), OccurredAt: &at, Frame: frame}
		if e.OrganizationID != nil {
			d.OrganizationID = e.OrganizationID.String()
		}
	}
	if deaths, ok := m.Headers["x-death"].([]any); ok && len(deaths) > 0 {
		if first, ok := deaths[0].(amqp.Table); ok {
			d.Reason, _ = first["reason"].(string)
			if t, ok := first["time"].(time.Time); ok {
				t = t.UTC()
				d.DeadLetteredAt = &t
			}
		}
	}
	if d.Reason == "" {
		d.Reason, _ = m.Headers["x-first-death-reason"].(string)
	}
	return d
}

// Redrive moves up to limit messages from t's dead-letter queue back into t's queue
// (through the default exchange, so no other consumer gets them again; for a consumer
// split over partitions, through its split exchange, which gives each message to its
// organization's partition), each confirmed by the broker before it leaves the
// dead-letter queue. The projector dedupes what it already applied. It returns how many
// it moved.
func Redrive(ctx context.Context, pool *pgxpool.Pool, b eventstore.Channeler, t Tracked, limit int) (int, error) {
	q := t.Queue
	exchange, key := "", q.Name
	if t.Partitioned {
		layouts, err := readLayouts(ctx, pool)
		if err != nil {
			return 0, db.Classify(err)
		}
		if n := rowOf(layouts, t.layout()).partitions; n > 1 {
			exchange, key = layoutOf(q, n).SplitExchange(), ""
		}
	}
	ch, err := b.Channel(ctx)
	if err != nil {
		return 0, err
	}
	defer ch.Close()
	if err := ch.Confirm(false); err != nil {
		return 0, err
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 1))
	returns := ch.NotifyReturn(make(chan amqp.Return, 1))
	moved := 0
	for moved < limit {
		m, ok, err := ch.Get(q.DeadQueue(), false)
		if err != nil {
			return moved, deadQueueError(q, err)
		}
		if !ok {
			return moved, nil
		}
		err = ch.PublishWithContext(ctx, exchange, key, true, false, amqp.Publishing{Headers: m.Headers,
			ContentType: m.ContentType, DeliveryMode: amqp.Persistent, MessageId: m.MessageId,
			CorrelationId: m.CorrelationId, Type: m.Type, Timestamp: m.Timestamp, Body: m.Body})
		if err != nil {
			return moved, err
		}
		select {
		case c, ok := <-confirms:
			if !ok || !c.Ack {
				return moved, fmt.Errorf("the broker did not confirm the redriven message %s", m.MessageId)
			}
		case <-ctx.Done():
			return moved, ctx.Err()
		}
		select {
		case r := <-returns:
			return moved, fmt.Errorf("queue %s did not take message %s: %s", q.Name, m.MessageId, r.ReplyText)
		default:
		}
		if err := m.Ack(false); err != nil {
			return moved, err
		}
		moved++
	}
	return moved, nil
}
