package eventstore

import (
	"context"
	"fmt"
	"strconv"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/db"
)

// What follows serves a consumer that checks, long after the relay published a stretch
// of the log, that it has applied every event of it, and has the broker deliver again
// what it finds missing (projections.Sweep). A stretch is (after, upTo] in commit order,
// at or before a relay's checkpoint: every transaction of it has ended, so it is read
// without the readable horizon and reads the same each time.

// RelayCheckpoint is where the relay called name ("" for the default one) has published
// up to: every event at or before it in commit order was confirmed by the broker.
func RelayCheckpoint(ctx context.Context, q Querier, name string) (Checkpoint, error) {
	if name == "" {
		name = "default"
	}
	return loadCheckpoint(ctx, q, name)
}

// Less reports whether c comes before d in commit order.
func (c Checkpoint) Less(d Checkpoint) bool {
	return c.TransactionID < d.TransactionID || (c.TransactionID == d.TransactionID && c.Position < d.Position)
}

// Published is what a check of a stretch reads of each event: its place in commit order,
// its stream's version and its type, not its data.
type Published struct {
	At            Checkpoint
	StreamID      uuid.UUID
	StreamVersion int
	Type          string
}

// ReadPublished returns up to limit events of the stretch (after, upTo], in commit order.
func ReadPublished(ctx context.Context, q Querier, after, upTo Checkpoint, limit int) ([]Published, error) {
	rows, err := q.Query(ctx, `SELECT transaction_id::text::bigint AS txid, position, stream_id, stream_version, type FROM events
		WHERE (transaction_id, position) > ($1::text::xid8, $2::bigint) AND (transaction_id, position) <= ($3::text::xid8, $4::bigint)
		ORDER BY transaction_id, position LIMIT $5`, stretchArgs(after, upTo, limit)...)
	if err != nil {
		return nil, db.Classify(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Published, error) {
		var p Published
		var txid int64
		err := r.Scan(&txid, &p.At.Position, &p.StreamID, &p.StreamVersion, &p.Type)
		p.At.TransactionID = uint64(txid)
		return p, err
	})
	return out, db.Classify(err)
}

// ReadStretch returns the events of streams in the stretch (after, upTo], in commit order.
func ReadStretch(ctx context.Context, q Querier, after, upTo Checkpoint, streams []uuid.UUID) ([]events.Envelope, error) {
	rows, err := q.Query(ctx, `SELECT `+envelopeColumns+` FROM events
		WHERE (transaction_id, position) > ($1::text::xid8, $2::bigint) AND (transaction_id, position) <= ($3::text::xid8, $4::bigint)
			AND stream_id = ANY($5) ORDER BY transaction_id, position`, stretchArgs(after, upTo, streams)...)
	if err != nil {
		return nil, db.Classify(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (events.Envelope, error) { return scanEnvelope(r) })
	return out, db.Classify(err)
}

func stretchArgs(after, upTo Checkpoint, last any) []any {
	return []any{strconv.FormatUint(after.TransactionID, 10), after.Position,
		strconv.FormatUint(upTo.TransactionID, 10), upTo.Position, last}
}

// RedriveTarget is where Redrive publishes: one consumer's queue, by the default exchange
// and the queue's name, or a partitioned layout's split exchange (broker.Layout), which
// routes each message by the bucket header every message carries.
type RedriveTarget struct {
	Exchange, Key string
	// Framed publishes the events in frames (broker.FrameHeader), for a projectors'
	// group; otherwise one message an event.
	Framed bool
	// Store is stamped on every envelope, as the relay does (Identity); uuid.Nil stamps
	// nothing (a runner that applies every envelope, in tests).
	Store uuid.UUID
}

// Redrive publishes envs again, in their order, as the relay published them, but to one
// consumer only: the other queues bound to the exchanges are not sent duplicates. It puts
// ch in confirm mode and returns once every message is confirmed; a nacked or unroutable
// message is an error (ctx bounds the wait). ch is the caller's to close.
func Redrive(ctx context.Context, ch *amqp.Channel, to RedriveTarget, envs []events.Envelope) error {
	if len(envs) == 0 {
		return nil
	}
	if err := ch.Confirm(false); err != nil {
		return fmt.Errorf("confirm mode: %w", err)
	}
	returns := ch.NotifyReturn(make(chan amqp.Return, len(envs)))
	var confirms []*amqp.DeferredConfirmation
	publish := func(msg amqp.Publishing) error {
		c, err := ch.PublishWithDeferredConfirmWithContext(ctx, to.Exchange, to.Key, true, false, msg)
		if err != nil {
			return fmt.Errorf("redrive %s: %w", msg.MessageId, err)
		}
		confirms = append(confirms, c)
		return nil
	}
	var fr framer
	store := to.Store
	for _, e := range envs {
		if store != uuid.Nil {
			e.StoreID = &store
		}
		body, err := e.MarshalJSON()
		if err != nil {
			return fmt.Errorf("encode event %s: %w", e.ID, err)
		}
		bucket := events.PartitionBucket(e.OrganizationID)
		if !to.Framed {
			if err := publish(eventMessage(e, body, bucket)); err != nil {
				return err
			}
		} else if f := fr.add(e, body, bucket); f != nil {
			if err := publish(frameMessage(f)); err != nil {
				return err
			}
		}
	}
	for _, f := range fr.rest() {
		if err := publish(frameMessage(f)); err != nil {
			return err
		}
	}
	for _, c := range confirms {
		ok, err := c.WaitContext(ctx)
		if err != nil {
			return fmt.Errorf("redrive: waiting for confirms: %w", err)
		}
		if !ok {
			return fmt.Errorf("redrive: the broker nacked delivery %d", c.DeliveryTag)
		}
	}
	// A return comes before its message's confirm, so every one is here by now.
	select {
	case ret := <-returns:
		return fmt.Errorf("redrive: message %s was unroutable (%s %q): %s", ret.MessageId, ret.Exchange, ret.RoutingKey, ret.ReplyText)
	default:
	}
	return nil
}
