package projections

import (
	"context"
	"encoding/json"
	"slices"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/bounded"
	"github.com/chatbotsaas/chatbotd/internal/db"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
)

// WebhooksName is the webhooks projector's name.
const WebhooksName = readmodel.WebhooksProjection

// Webhooks keeps the subscriptions (webhooks) and turns every event of an organization
// into one delivery per matching active subscription (webhook_deliveries). Both happen
// in one projector, so events and subscriptions are seen in one order, the relay's commit
// order: a subscription gets exactly the events committed after it, whatever the timing.
// A delivery is written in the transaction that applies its event, and the runtime
// applies each event once, so there is exactly one per (subscription, event).
//
// It is not rebuildable: replaying the log would deliver history again.
type Webhooks struct{}

func (Webhooks) Name() string { return WebhooksName }

// Pipelined says that Apply never uses what an Exec returns: the runtime pipelines its
// writes with the batch's other members'. Its query of the subscriptions goes after
// what is queued, in the same round trip, so it sees a subscription written earlier in
// the batch.
func (Webhooks) Pipelined() {}

func (Webhooks) Bindings() []string { return []string{"#"} }

// Apply keeps the subscriptions and writes the event's deliveries.
func (Webhooks) Apply(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
	if e.OrganizationID == nil {
		return nil // no organization's subscription can match
	}
	if e.StreamType == events.StreamWebhook {
		if err := applyWebhook(ctx, tx, e); err != nil {
			return err
		}
	}
	rows, err := tx.Query(ctx, `SELECT id, events FROM webhooks WHERE organization_id = $1 AND status = 'active'`, e.OrganizationID)
	if err != nil {
		return err
	}
	var ids []uuid.UUID
	for rows.Next() {
		var id uuid.UUID
		var patterns []string
		if err := rows.Scan(&id, &patterns); err != nil {
			rows.Close()
			return err
		}
		if topicMatcher(patterns)(e.Type) {
			ids = append(ids, id)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(ids) == 0 {
		return err
	}
	payload, err := json.Marshal(e)
	if err != nil {
		return err
	}
	deliveries := make([]uuid.UUID, len(ids))
	for i := range ids {
		deliveries[i] = uuid.Must(uuid.NewV7())
	}
	if _, err := tx.Exec(ctx, `WITH d AS (
			INSERT INTO webhook_deliveries (id, webhook_id, organization_id, event_id, event_type,
				stream_id, stream_version, position, payload, status, next_attempt_at)
			SELECT d, w, $3, $4, $5, $6, $7, $8, $9, 'pending', now() FROM unnest($1::uuid[], $2::uuid[]) AS u(d, w)
			ON CONFLICT (webhook_id, event_id) DO NOTHING
			RETURNING id, webhook_id, stream_id, stream_version, position, next_attempt_at)
		`+enqueueDeliveries,
		deliveries, ids, e.OrganizationID, e.ID, e.Type, e.StreamID, e.StreamVersion, e.Position, payload); err != nil {
		return err
	}
	NoteWork(ctx, readmodel.DeliveriesWork)
	return nil
}

// ApplySet writes the deliveries of a run of events with one query for the run's
// organizations' subscriptions and one INSERT, where Apply takes a query per event. An
// event of a subscription's own stream ends the run (it changes what later events
// match) and is applied alone, in order.
func (w Webhooks) ApplySet(ctx context.Context, tx pgx.Tx, envs []events.Envelope) error {
	var held []events.Envelope
	take := func(e events.Envelope) (bool, error) {
		if e.StreamType == events.StreamWebhook {
			return false, nil
		}
		if e.OrganizationID != nil { // without one, no subscription can match
			held = append(held, e)
		}
		return true, nil
	}
	flush := func() error {
		if len(held) == 0 {
			return nil
		}
		err := writeDeliveries(ctx, tx, held)
		held = nil
		return err
	}
	return applyRuns(envs, take, flush, func(e events.Envelope) error { return w.Apply(ctx, tx, e) })
}

// subscriptions are the active subscriptions of some organizations, in the order of
// their creation.
type subscriptions map[uuid.UUID][]subscription

type subscription struct {
	id      uuid.UUID
	matches func(string) bool
}

// subscriptionsQuery reads the active subscriptions of the organizations $1.
const subscriptionsQuery = `SELECT id, organization_id, events FROM webhooks
	WHERE organization_id = ANY($1) AND status = 'active' ORDER BY created_at, id`

// scan reads subscriptionsQuery's rows into subs.
func (subs subscriptions) scan(rows pgx.Rows) error {
	defer rows.Close()
	for rows.Next() {
		var id, org uuid.UUID
		var patterns []string
		if err := rows.Scan(&id, &org, &patterns); err != nil {
			return err
		}
		subs[org] = append(subs[org], subscription{id, topicMatcher(patterns)})
	}
	return rows.Err()
}

// prefetched are the subscriptions of a batch's organizations, read in its prelude.
type prefetched struct {
	orgs map[uuid.UUID]bool
	subs subscriptions
}

type prefetchedKey struct{}

// Prefetch reads, in the batch's prelude, the active subscriptions of the organizations
// of envs: the query then costs the batch no round trip of its own. Only this projector
// writes the subscriptions, and only for events of their own streams, so without such an
// event in envs what the prelude reads is what the query would read in order. With one,
// it reads nothing, and the runs' queries follow the events' order (ApplySet).
func (Webhooks) Prefetch(b *pgx.Batch, envs []events.Envelope) func(context.Context) context.Context {
	p := &prefetched{orgs: map[uuid.UUID]bool{}, subs: subscriptions{}}
	var orgs []uuid.UUID
	for _, e := range envs {
		if e.StreamType == events.StreamWebhook {
			return nil
		}
		if e.OrganizationID != nil && !p.orgs[*e.OrganizationID] {
			p.orgs[*e.OrganizationID] = true
			orgs = append(orgs, *e.OrganizationID)
		}
	}
	if len(orgs) == 0 {
		return nil
	}
	// A generic plan for this query only (see writeDeliveries).
	b.Queue(db.GenericPlans)
	b.Queue(subscriptionsQuery, orgs).Query(p.subs.scan)
	b.Queue(db.DefaultPlans)
	return func(ctx context.Context) context.Context { return context.WithValue(ctx, prefetchedKey{}, p) }
}

// subscriptionsOf are the active subscriptions of orgs: those the batch's prelude read
// (Prefetch) when it read every one of orgs', else read now.
func subscriptionsOf(ctx context.Context, tx pgx.Tx, orgs []uuid.UUID) (subscriptions, error) {
	if p, ok := ctx.Value(prefetchedKey{}).(*prefetched); ok && !slices.ContainsFunc(orgs, func(o uuid.UUID) bool { return !p.orgs[o] }) {
		return p.subs, nil
	}
	// A generic plan (db.GenericPlans), for this query only: it runs at every batch, and
	// PostgreSQL planned it again each time. In a pipelined transaction the two Execs
	// around it cost no round trip of their own.
	if _, err := tx.Exec(ctx, db.GenericPlans); err != nil {
		return nil, err
	}
	rows, err := tx.Query(ctx, subscriptionsQuery, orgs)
	if err != nil {
		return nil, err
	}
	subs := subscriptions{}
	if err := subs.scan(rows); err != nil {
		return nil, err
	}
	_, err = tx.Exec(ctx, db.DefaultPlans)
	return subs, err
}

// writeDeliveries writes one delivery per event and matching active subscription of its
// organization, and notes the deliverers' work (NoteWork).
func writeDeliveries(ctx context.Context, tx pgx.Tx, envs []events.Envelope) error {
	seen := map[uuid.UUID]bool{}
	var orgs []uuid.UUID
	for _, e := range envs {
		if !seen[*e.OrganizationID] {
			seen[*e.OrganizationID] = true
			orgs = append(orgs, *e.OrganizationID)
		}
	}
	subs, err := subscriptionsOf(ctx, tx, orgs)
	if err != nil || len(subs) == 0 {
		return err
	}
	var (
		ids, hooks, dorgs, eventIDs, streams []uuid.UUID
		types                                []string
		versions                             []int32
		positions                            []int64
		payloads                             [][]byte
	)
	for _, e := range envs {
		var payload []byte
		for _, s := range subs[*e.OrganizationID] {
			if !s.matches(e.Type) {
				continue
			}
			if payload == nil {
				if payload, err = json.Marshal(e); err != nil {
					return err
				}
			}
			ids, hooks, dorgs, eventIDs = append(ids, uuid.Must(uuid.NewV7())), append(hooks, s.id), append(dorgs, *e.OrganizationID), append(eventIDs, e.ID)
			streams, types, versions = append(streams, e.StreamID), append(types, e.Type), append(versions, int32(e.StreamVersion))
			positions, payloads = append(positions, e.Position), append(payloads, payload)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, `WITH d AS (
			INSERT INTO webhook_deliveries (id, webhook_id, organization_id, event_id, event_type,
				stream_id, stream_version, position, payload, status, next_attempt_at)
			SELECT u.id, u.hook, u.org, u.event, u.type, u.stream, u.v, u.pos, u.payload, 'pending', now()
			FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::uuid[], $7::int[], $8::bigint[], $9::bytea[])
				AS u(id, hook, org, event, type, stream, v, pos, payload)
			ON CONFLICT (webhook_id, event_id) DO NOTHING
			RETURNING id, webhook_id, stream_id, stream_version, position, next_attempt_at)
		`+enqueueDeliveries,
		ids, hooks, dorgs, eventIDs, types, streams, versions, positions, payloads); err != nil {
		return err
	}
	NoteWork(ctx, readmodel.DeliveriesWork)
	return nil
}

// enqueueDeliveries follows a CTE d of the deliveries just inserted: each pending
// delivery has its row in webhook_queue (migration 00021), written in the same
// statement, which the deliverer claims from.
const enqueueDeliveries = `INSERT INTO webhook_queue (delivery_id, webhook_id, stream_id, stream_version, position, next_attempt_at)
	SELECT id, webhook_id, stream_id, stream_version, position, next_attempt_at FROM d`

// matchers caches compiled subscription patterns. Tenants choose the patterns, so the
// cache is bounded: when it holds maxMatchers sets it starts again empty (there are
// usually few distinct sets, and compiling one again is cheap).
var matchers = bounded.New[string, func(string) bool](maxMatchers)

const maxMatchers = 1024

func topicMatcher(patterns []string) func(string) bool {
	key := strings.Join(patterns, " ")
	if m, ok := matchers.Get(key); ok {
		return m
	}
	m := events.TopicMatcher(patterns)
	matchers.Put(key, m)
	return m
}

func applyWebhook(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
	ev, err := e.Decode()
	if err != nil {
		return err
	}
	switch ev := ev.(type) {
	case events.WebhookCreated:
		_, err = tx.Exec(ctx, `INSERT INTO webhooks (id, organization_id, url, events, status, version, created_at, updated_at)
			VALUES ($1, $2, $3, $4, 'active', $5, $6, $6) ON CONFLICT (id) DO NOTHING`,
			e.StreamID, e.OrganizationID, ev.URL, ev.Events, e.StreamVersion, e.OccurredAt)
		return err
	case events.WebhookDisabled, events.WebhookDeleted:
		status, reason := "deleted", ""
		if d, ok := ev.(events.WebhookDisabled); ok {
			status, reason = "disabled", d.Reason
		}
		// A deleted subscription stays deleted; what was pending for it is cancelled.
		if _, err := tx.Exec(ctx, `UPDATE webhooks SET status = CASE WHEN status = 'deleted' THEN status ELSE $2 END,
			disabled_reason = CASE WHEN $2 = 'disabled' THEN $3 ELSE disabled_reason END, version = $4, updated_at = $5
			WHERE id = $1`, e.StreamID, status, reason, e.StreamVersion, e.OccurredAt); err != nil {
			return err
		}
		// Found through the queue, which holds exactly the pending ones, and updated by
		// key: a join could be planned as a scan of every delivery kept, inside the
		// projectors' transaction.
		_, err = tx.Exec(ctx, `WITH dequeued AS (DELETE FROM webhook_queue WHERE webhook_id = $1 RETURNING delivery_id)
			UPDATE webhook_deliveries SET status = 'cancelled', finished_at = $2
			WHERE id = ANY (ARRAY(SELECT delivery_id FROM dequeued)) AND status = 'pending'`, e.StreamID, e.OccurredAt)
		return err
	}
	return nil
}
