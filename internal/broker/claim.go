package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// ClaimSuffix names, after a deployment's AMQP_QUEUE_PREFIX, the queue that records which
// event store the deployment's queues serve.
const ClaimSuffix = "store"

// ErrClaimed is returned by ClaimQueues when the queues serve another store.
var ErrClaimed = errors.New("the queues serve another event store")

// ClaimQueues makes sure the queues named with prefix serve store, and no other: the
// first deployment to start records its store in a one-message quorum queue
// (prefix+"store", x-max-length 1 with reject-publish, so of two racing claims the
// broker confirms one and refuses the other); a deployment of another store finds it
// there and gets ErrClaimed, with a message saying what to set. (A length limit counts
// ready messages only, so two deployments of different stores starting within the same
// few milliseconds could both pass; the envelopes' store ids still keep either from
// applying the other's events.) Without this, a second
// deployment on the same broker with the default names consumes the first one's events
// from the shared queues, and each loses what the other took.
func ClaimQueues(ctx context.Context, ch *amqp.Channel, prefix, store string) error {
	name := prefix + ClaimSuffix
	if _, err := ch.QueueDeclare(name, true, false, false, false, amqp.Table{
		"x-queue-type": "quorum", "x-max-length": 1, "x-overflow": "reject-publish"}); err != nil {
		return fmt.Errorf("declare queue %s: %w", name, err)
	}
	if err := ch.Confirm(false); err != nil {
		return fmt.Errorf("confirm mode: %w", err)
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 1))
	for range 5 {
		m, ok, err := ch.Get(name, false)
		if err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
		if ok {
			owner := string(m.Body)
			if err := m.Nack(false, true); err != nil {
				return fmt.Errorf("return the claim to %s: %w", name, err)
			}
			if owner != store {
				return fmt.Errorf("%w: AMQP_QUEUE_PREFIX %q is taken by the deployment of store %s, and this one's "+
					"(DATABASE_URL) is %s: give this deployment an AMQP_QUEUE_PREFIX and an AMQP_EXCHANGE of its own, "+
					"or point DATABASE_URL at that store (if that store is gone for good, let its claim go: rabbitmqctl delete_queue %s)", ErrClaimed, prefix, owner, store, name)
			}
			return nil
		}
		if err := ch.PublishWithContext(ctx, "", name, true, false, amqp.Publishing{
			DeliveryMode: amqp.Persistent, ContentType: "text/plain", Body: []byte(store)}); err != nil {
			return fmt.Errorf("claim %s: %w", name, err)
		}
		select {
		case <-confirms: // acked: ours is there; nacked: another claim won. Either way, read it.
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(15 * time.Second):
			return fmt.Errorf("claim %s: no confirm", name)
		}
	}
	return fmt.Errorf("claim %s: the claim could not be read back", name)
}
