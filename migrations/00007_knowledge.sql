-- Knowledge bases. knowledge_entries is the read model of the entries as edited;
-- knowledge_index is what training built from them (the responder searches only that).

-- +goose Up
CREATE TABLE knowledge_entries (
    id              uuid PRIMARY KEY,
    chatbot_id      uuid        NOT NULL,
    organization_id uuid        NOT NULL,
    question        text        NOT NULL,
    answer          text        NOT NULL,
    tags            text[]      NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    deleted_at      timestamptz
);
CREATE INDEX knowledge_entries_chatbot_idx ON knowledge_entries (chatbot_id, created_at, id) WHERE deleted_at IS NULL;

CREATE TABLE knowledge_index (
    chatbot_id uuid NOT NULL,
    entry_id   uuid NOT NULL,
    question   text NOT NULL,
    answer     text NOT NULL,
    search     tsvector GENERATED ALWAYS AS (to_tsvector('english', question)) STORED,
    PRIMARY KEY (chatbot_id, entry_id)
);
CREATE INDEX knowledge_index_search_idx ON knowledge_index USING gin (search);
CREATE INDEX knowledge_index_trgm_idx ON knowledge_index USING gin (question gin_trgm_ops);

ALTER TABLE chatbots
    ADD COLUMN training_status text,
    ADD COLUMN trained_at      timestamptz,
    ADD COLUMN trained_entries integer;

-- +goose Down
ALTER TABLE chatbots DROP COLUMN training_status, DROP COLUMN trained_at, DROP COLUMN trained_entries;
DROP TABLE knowledge_index;
DROP TABLE knowledge_entries;
