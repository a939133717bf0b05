-- The write side: the append-only event log and the rows that commands write in the same
-- transaction as their events (set-based reservations, credentials, idempotency).

-- +goose Up
CREATE TABLE events (
    position        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id              uuid        NOT NULL,
    stream_type     text        NOT NULL,
    stream_id       uuid        NOT NULL,
    stream_version  integer     NOT NULL CHECK (stream_version > 0),
    type            text        NOT NULL,
    schema_version  integer     NOT NULL CHECK (schema_version > 0),
    organization_id uuid,
    actor_type      text        NOT NULL,
    actor_id        uuid,
    correlation_id  text        NOT NULL DEFAULT '',
    causation_id    text        NOT NULL DEFAULT '',
    request_id      text        NOT NULL DEFAULT '',
    metadata        jsonb       NOT NULL DEFAULT '{}',
    data            jsonb       NOT NULL,
    occurred_at     timestamptz NOT NULL,
    -- The id of the inserting transaction. The relay reads only rows whose transaction is
    -- older than every running one, in (transaction_id, position) order, so a row that
    -- commits late is never skipped.
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    CONSTRAINT events_id_key UNIQUE (id),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version)
);
CREATE INDEX events_commit_order_idx ON events (transaction_id, position);
CREATE INDEX events_organization_idx ON events (organization_id, position);
CREATE INDEX events_type_idx ON events (type, position);

-- The log is append-only: history is corrected by new events, never by rewriting rows.
-- +goose StatementBegin
CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
-- +goose StatementEnd
CREATE TRIGGER events_no_update BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_append_only();

-- Where the relay has published up to, advanced only after broker confirms.
CREATE TABLE relay_checkpoints (
    name           text PRIMARY KEY,
    transaction_id xid8        NOT NULL,
    position       bigint      NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Emails are unique platform-wide, case-insensitively; the row is written in the same
-- transaction as user.created / user.updated and deleted with user.deleted.
CREATE TABLE email_reservations (
    email   text PRIMARY KEY CHECK (email = lower(email)),
    user_id uuid NOT NULL UNIQUE
);

CREATE TABLE organization_slugs (
    slug            text PRIMARY KEY,
    organization_id uuid NOT NULL UNIQUE
);

-- Password hashes never enter the event log; they live here, written in the command's
-- transaction.
CREATE TABLE user_credentials (
    user_id       uuid PRIMARY KEY,
    password_hash text        NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE idempotency_keys (
    scope        text        NOT NULL,
    key          text        NOT NULL,
    request_hash bytea       NOT NULL,
    status       integer,
    headers      jsonb,
    body         bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

-- Development fallback for JWT_SIGNING_KEYS: one key made on first start.
CREATE TABLE signing_keys (
    kid        text PRIMARY KEY,
    seed       bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE signing_keys;
DROP TABLE idempotency_keys;
DROP TABLE user_credentials;
DROP TABLE organization_slugs;
DROP TABLE email_reservations;
DROP TABLE relay_checkpoints;
DROP TABLE events;
DROP FUNCTION events_append_only();
