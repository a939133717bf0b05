-- Email notifications. The notifications projector keeps each user's address
-- (notification_recipients) and writes one row per email into notifications, keyed by
-- the event that caused it, in the transaction that applies the event: one email per
-- event, whatever the duplicates. The mailer sends the pending ones.

-- +goose Up
CREATE TABLE notification_recipients (
    user_id         uuid PRIMARY KEY,
    organization_id uuid NOT NULL,
    name            text NOT NULL,
    email           text NOT NULL
);

CREATE TABLE notifications (
    id              uuid        PRIMARY KEY, -- the causing event's id
    organization_id uuid        NOT NULL,
    user_id         uuid        NOT NULL,
    kind            text        NOT NULL,
    to_name         text        NOT NULL,
    to_address      text        NOT NULL,
    subject         text        NOT NULL,
    body            text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('pending', 'sent', 'logged', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz
);
CREATE INDEX notifications_due_idx ON notifications (next_attempt_at) WHERE status = 'pending';
CREATE INDEX notifications_user_idx ON notifications (user_id, created_at);

-- +goose Down
DROP TABLE notifications;
DROP TABLE notification_recipients;
