-- The webhook deliveries still to make, in a queue of their own.
--
-- A delivery's outcome changed status, which the due and stream indexes named in their
-- predicates, and set finished_at, which another index named: PostgreSQL wrote the
-- whole delivery again (its payload with it) with a new entry in each of its indexes,
-- the largest part of a delivery's cost in the database. Now webhook_queue holds one
-- small row per pending delivery: what a claim reads, orders and leases. An outcome
-- deletes the delivery's queue row and changes columns of webhook_deliveries that no
-- index names, so with room on the page (fillfactor 50) it is a heap-only update.
-- A claim of every row of a queue page must find room on it for each row's new version
-- (one that has a lease is 8 bytes longer): at fillfactor 50 the last of about 37 rows
-- did not fit, at 40 about 30 rows leave room for all.
--
-- A queue row exists exactly while its delivery is pending: the webhooks projector
-- writes both in one statement, and every change out of pending (delivered, failed,
-- cancelled) deletes it in the same statement. Its attempts count claims, including the
-- one in flight; the delivery's count is written with each outcome.
--
-- Pruning finds old deliveries by created_at: a delivery finishes after it is created,
-- so finished_at < cutoff implies created_at < cutoff.

-- +goose Up
CREATE TABLE webhook_queue (
    delivery_id     uuid        PRIMARY KEY,
    webhook_id      uuid        NOT NULL,
    stream_id       uuid        NOT NULL,
    stream_version  integer     NOT NULL,
    position        bigint      NOT NULL,
    next_attempt_at timestamptz NOT NULL,
    leased_until    timestamptz,
    attempts        integer     NOT NULL DEFAULT 0
) WITH (fillfactor = 40);
-- What is due, in the claim's order; and what of a stream is still ahead of a delivery
-- (the order per stream), which also finds a subscription's pending deliveries.
CREATE INDEX webhook_queue_due_idx ON webhook_queue (next_attempt_at, position);
CREATE INDEX webhook_queue_stream_idx ON webhook_queue (webhook_id, stream_id, stream_version);
INSERT INTO webhook_queue (delivery_id, webhook_id, stream_id, stream_version, position, next_attempt_at, leased_until, attempts)
    SELECT id, webhook_id, stream_id, stream_version, position, next_attempt_at, leased_until, attempts
    FROM webhook_deliveries WHERE status = 'pending';
DROP INDEX webhook_deliveries_due_idx;
DROP INDEX webhook_deliveries_stream_idx;
DROP INDEX webhook_deliveries_finished_idx;
CREATE INDEX webhook_deliveries_created_idx ON webhook_deliveries (created_at);
ALTER TABLE webhook_deliveries DROP COLUMN leased_until;

-- +goose Down
ALTER TABLE webhook_deliveries ADD COLUMN leased_until timestamptz;
UPDATE webhook_deliveries d SET leased_until = q.leased_until, attempts = q.attempts
    FROM webhook_queue q WHERE q.delivery_id = d.id;
DROP INDEX webhook_deliveries_created_idx;
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at, position) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_stream_idx ON webhook_deliveries (webhook_id, stream_id, stream_version) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_finished_idx ON webhook_deliveries (finished_at) WHERE finished_at IS NOT NULL;
DROP TABLE webhook_queue;
