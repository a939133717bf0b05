-- Chatbots. The webhook responder's secret is sealed (AES-GCM) in chatbot_secrets, written
-- in the same transaction as the event that sets it; events only say that a secret is set.

-- +goose Up
CREATE TABLE chatbot_secrets (
    chatbot_id uuid PRIMARY KEY,
    sealed     bytea       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Development fallback for SECRETS_KEY: one key made on first start.
CREATE TABLE local_keys (
    name       text PRIMARY KEY,
    key        bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE chatbots (
    id               uuid PRIMARY KEY,
    organization_id  uuid        NOT NULL,
    name             text        NOT NULL,
    description      text        NOT NULL,
    welcome_message  text        NOT NULL,
    fallback_message text        NOT NULL,
    status           text        NOT NULL,
    responder        jsonb       NOT NULL,
    version          integer     NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    deleted_at       timestamptz,
    search           tsvector GENERATED ALWAYS AS
        (to_tsvector('simple', coalesce(name, '') || ' ' || coalesce(description, ''))) STORED
);
CREATE INDEX chatbots_org_created_idx ON chatbots (organization_id, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX chatbots_search_idx ON chatbots USING gin (search);

-- +goose Down
DROP TABLE chatbots;
DROP TABLE local_keys;
DROP TABLE chatbot_secrets;
