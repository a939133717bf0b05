-- Conversations and messages. messages is partitioned by month (created_at) and
-- ensure_message_partitions creates partitions ahead; serve calls it at start and twice
-- a day, and the default partition catches anything outside them.

-- +goose Up
CREATE TABLE conversations (
    id              uuid PRIMARY KEY,
    organization_id uuid        NOT NULL,
    chatbot_id      uuid        NOT NULL,
    metadata        jsonb       NOT NULL DEFAULT '{}',
    messages        integer     NOT NULL DEFAULT 0,
    last_message_at timestamptz,
    created_at      timestamptz NOT NULL
);
CREATE INDEX conversations_org_chatbot_idx ON conversations (organization_id, chatbot_id, created_at DESC, id);
CREATE INDEX conversations_org_created_idx ON conversations (organization_id, created_at DESC, id);

CREATE TABLE messages (
    id              uuid        NOT NULL,
    conversation_id uuid        NOT NULL,
    chatbot_id      uuid        NOT NULL,
    organization_id uuid        NOT NULL,
    role            text        NOT NULL CHECK (role IN ('user', 'bot')),
    content         text        NOT NULL,
    status          text,
    reply_to        uuid,
    failure_reason  text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE INDEX messages_conversation_idx ON messages (conversation_id, created_at, id);
CREATE TABLE messages_default PARTITION OF messages DEFAULT;

-- +goose StatementBegin
CREATE FUNCTION ensure_message_partitions(start timestamptz, months integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    m    date := date_trunc('month', start AT TIME ZONE 'UTC')::date;
    name text;
BEGIN
    FOR i IN 0..months LOOP
        name := format('messages_y%sm%s', to_char(m, 'YYYY'), to_char(m, 'MM'));
        IF to_regclass(name) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF messages FOR VALUES FROM (%L) TO (%L)',
                name, (m::timestamp AT TIME ZONE 'UTC'), ((m + interval '1 month')::timestamp AT TIME ZONE 'UTC'));
        END IF;
        m := (m + interval '1 month')::date;
    END LOOP;
END $$;
-- +goose StatementEnd
SELECT ensure_message_partitions(now(), 3);

-- +goose Down
DROP FUNCTION ensure_message_partitions(timestamptz, integer);
DROP TABLE messages;
DROP TABLE conversations;
