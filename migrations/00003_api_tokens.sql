-- API tokens. The credential row (the secret's hash and what authentication needs) is
-- written in the same transaction as token.created and deleted with token.revoked, so a
-- revoked token stops at once; the hash never enters the event log. api_tokens is the
-- read model for listing.

-- +goose Up
CREATE TABLE api_token_credentials (
    token_id        uuid PRIMARY KEY,
    user_id         uuid        NOT NULL,
    organization_id uuid        NOT NULL,
    secret_hash     bytea       NOT NULL,
    abilities       text[]      NOT NULL,
    expires_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_used_at    timestamptz
);
CREATE INDEX api_token_credentials_user_idx ON api_token_credentials (user_id);

CREATE TABLE api_tokens (
    id              uuid PRIMARY KEY,
    organization_id uuid        NOT NULL,
    user_id         uuid        NOT NULL,
    name            text        NOT NULL,
    abilities       text[]      NOT NULL,
    expires_at      timestamptz,
    version         integer     NOT NULL,
    created_at      timestamptz NOT NULL,
    revoked_at      timestamptz
);
CREATE INDEX api_tokens_user_idx ON api_tokens (user_id, created_at) WHERE revoked_at IS NULL;

-- +goose Down
DROP TABLE api_tokens;
DROP TABLE api_token_credentials;
