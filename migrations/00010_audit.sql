-- The audit trail (a projection of every event), the tamper-evidence chain over each
-- organization's history, and the bookkeeping of audit retention.

-- +goose Up

-- GET /api/v1/events and `chatbotd replay` read one organization's history in commit
-- order (the relay's order).
CREATE INDEX events_org_commit_idx ON events (organization_id, transaction_id, position);

-- One entry per event; the id is the event's id, so a redelivery cannot add a second.
CREATE TABLE audit_entries (
    id              uuid PRIMARY KEY,
    position        bigint      NOT NULL,
    organization_id uuid,
    action          text        NOT NULL,
    actor_type      text        NOT NULL,
    actor_id        uuid,
    subject_type    text        NOT NULL,
    subject_id      uuid        NOT NULL,
    request_id      text        NOT NULL,
    ip_address      text,
    user_agent      text,
    changes         jsonb       NOT NULL,
    occurred_at     timestamptz NOT NULL,
    CONSTRAINT audit_entries_position_key UNIQUE (position)
);
-- Newest first, in every filter: each filter has its own index that also gives the order.
CREATE INDEX audit_entries_org_time_idx ON audit_entries (organization_id, occurred_at DESC, position DESC);
CREATE INDEX audit_entries_org_action_idx ON audit_entries (organization_id, action, occurred_at DESC, position DESC);
CREATE INDEX audit_entries_org_actor_idx ON audit_entries (organization_id, actor_id, occurred_at DESC, position DESC);
CREATE INDEX audit_entries_org_subject_idx ON audit_entries (organization_id, subject_id, occurred_at DESC, position DESC);
CREATE INDEX audit_entries_org_request_idx ON audit_entries (organization_id, request_id, occurred_at DESC, position DESC);

-- The hash chain: one link per event, per organization (the nil uuid for events of no
-- organization), in commit order. hash = SHA-256(previous hash, event hash, seq,
-- position); signature = HMAC-SHA-256 of the link with AUDIT_SIGNING_KEY.
CREATE TABLE audit_chain (
    organization_id uuid   NOT NULL,
    seq             bigint NOT NULL,
    position        bigint NOT NULL,
    event_hash      bytea  NOT NULL,
    hash            bytea  NOT NULL,
    signature       bytea  NOT NULL,
    PRIMARY KEY (organization_id, seq),
    CONSTRAINT audit_chain_position_key UNIQUE (position)
);

CREATE TABLE audit_chain_heads (
    organization_id uuid PRIMARY KEY,
    seq             bigint NOT NULL,
    hash            bytea  NOT NULL
);

-- Each prune of audit entries: entries that occurred before `before` may be missing from
-- audit_entries (the event log keeps them; a rebuild restores them on request).
CREATE TABLE audit_prunes (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    before     timestamptz NOT NULL,
    entries    bigint      NOT NULL,
    pruned_at  timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE audit_prunes;
DROP TABLE audit_chain_heads;
DROP TABLE audit_chain;
DROP TABLE audit_entries;
DROP INDEX events_org_commit_idx;
