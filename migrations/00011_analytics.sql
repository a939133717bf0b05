-- Analytics: daily counters per chatbot, a row per user message for reply times (p95
-- needs the values, not just their sum), and failures by code. The analytics projector
-- writes them; GET /api/v1/analytics/overview reads them. Days are UTC days.

-- +goose Up
ALTER TABLE messages ADD COLUMN failure_code text;

CREATE TABLE analytics_daily (
    organization_id uuid    NOT NULL,
    day             date    NOT NULL,
    chatbot_id      uuid    NOT NULL,
    conversations   integer NOT NULL DEFAULT 0,
    messages        integer NOT NULL DEFAULT 0,
    replies         integer NOT NULL DEFAULT 0,
    failed          integer NOT NULL DEFAULT 0,
    reply_ms_sum    bigint  NOT NULL DEFAULT 0,
    PRIMARY KEY (organization_id, day, chatbot_id)
);

CREATE TABLE analytics_failures (
    organization_id uuid    NOT NULL,
    day             date    NOT NULL,
    chatbot_id      uuid    NOT NULL,
    code            text    NOT NULL,
    failed          integer NOT NULL DEFAULT 0,
    PRIMARY KEY (organization_id, day, chatbot_id, code)
);

-- One row per user message: posted_at until it is answered, then the reply's day and
-- how long it took.
CREATE TABLE analytics_replies (
    message_id      uuid        PRIMARY KEY,
    organization_id uuid        NOT NULL,
    chatbot_id      uuid        NOT NULL,
    posted_at       timestamptz NOT NULL,
    replied_day     date,
    reply_ms        integer
);
CREATE INDEX analytics_replies_org_day_idx ON analytics_replies (organization_id, replied_day, chatbot_id)
    INCLUDE (reply_ms) WHERE replied_day IS NOT NULL;

-- +goose Down
DROP TABLE analytics_replies;
DROP TABLE analytics_failures;
DROP TABLE analytics_daily;
ALTER TABLE messages DROP COLUMN failure_code;
