-- Outgoing webhooks. webhooks is the subscriptions' read model; webhook_secrets holds
-- each one's signing secret sealed (never in an event); webhook_deliveries is one row per
-- (subscription, event), written by the webhooks projector in the transaction that
-- applies the event (so exactly one per pair), and worked off by the deliverer;
-- webhook_attempts records every HTTP attempt.

-- +goose Up
CREATE TABLE webhooks (
    id                   uuid        PRIMARY KEY,
    organization_id      uuid        NOT NULL,
    url                  text        NOT NULL,
    events               text[]      NOT NULL,
    status               text        NOT NULL CHECK (status IN ('active', 'disabled', 'deleted')),
    disabled_reason      text,
    -- Written by the deliverer: failed attempts since the last success.
    consecutive_failures integer     NOT NULL DEFAULT 0,
    version              integer     NOT NULL,
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL
);
CREATE INDEX webhooks_org_idx ON webhooks (organization_id, created_at DESC, id) WHERE status <> 'deleted';

CREATE TABLE webhook_secrets (
    webhook_id uuid  PRIMARY KEY,
    sealed     bytea NOT NULL
);

CREATE TABLE webhook_deliveries (
    id               uuid        PRIMARY KEY,
    webhook_id       uuid        NOT NULL,
    organization_id  uuid        NOT NULL,
    event_id         uuid        NOT NULL,
    event_type       text        NOT NULL,
    stream_id        uuid        NOT NULL,
    stream_version   integer     NOT NULL,
    position         bigint      NOT NULL,
    payload          bytea       NOT NULL,
    status           text        NOT NULL CHECK (status IN ('pending', 'delivered', 'failed', 'cancelled')),
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    last_status_code integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    UNIQUE (webhook_id, event_id)
);
-- What is due, and what of a stream is still ahead of a delivery (the order per stream).
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_stream_idx ON webhook_deliveries (webhook_id, stream_id, stream_version) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_list_idx ON webhook_deliveries (webhook_id, created_at DESC, id);
CREATE INDEX webhook_deliveries_finished_idx ON webhook_deliveries (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE webhook_attempts (
    delivery_id  uuid        NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt      integer     NOT NULL,
    status_code  integer,
    error        text,
    duration_ms  integer     NOT NULL,
    attempted_at timestamptz NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);

-- +goose Down
DROP TABLE webhook_attempts;
DROP TABLE webhook_deliveries;
DROP TABLE webhook_secrets;
DROP TABLE webhooks;
