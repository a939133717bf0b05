-- The read side: projections of the log. Each projector records, per stream, the last
-- version it applied, in the same transaction as its writes.

-- +goose Up
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE projection_streams (
    projection text    NOT NULL,
    stream_id  uuid    NOT NULL,
    version    integer NOT NULL,
    PRIMARY KEY (projection, stream_id)
);

CREATE TABLE organizations (
    id         uuid PRIMARY KEY,
    name       text        NOT NULL,
    slug       text        NOT NULL,
    status     text        NOT NULL,
    version    integer     NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE TABLE users (
    id              uuid PRIMARY KEY,
    organization_id uuid        NOT NULL,
    name            text        NOT NULL,
    email           text        NOT NULL,
    status          text        NOT NULL,
    roles           text[]      NOT NULL DEFAULT '{}',
    version         integer     NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    deleted_at      timestamptz
);
CREATE INDEX users_org_created_idx ON users (organization_id, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX users_org_name_idx ON users (organization_id, lower(name), id) WHERE deleted_at IS NULL;
CREATE INDEX users_org_email_idx ON users (organization_id, lower(email)) WHERE deleted_at IS NULL;
CREATE INDEX users_search_idx ON users USING gin ((lower(name || ' ' || email)) gin_trgm_ops);
CREATE INDEX users_roles_idx ON users USING gin (roles);

CREATE TABLE sessions (
    id              uuid PRIMARY KEY,
    user_id         uuid        NOT NULL,
    organization_id uuid        NOT NULL,
    generation      integer     NOT NULL,
    version         integer     NOT NULL,
    created_at      timestamptz NOT NULL,
    revoked_at      timestamptz,
    revoked_reason  text
);
CREATE INDEX sessions_user_idx ON sessions (user_id);

-- +goose Down
DROP TABLE sessions;
DROP TABLE users;
DROP TABLE organizations;
DROP TABLE projection_streams;
