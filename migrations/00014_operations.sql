-- Operability: where each projection is, platform operators, organization suspension,
-- and the correlation of audit entries.

-- +goose Up

-- Each projector's progress, written in the transaction of every batch it applies: the
-- highest position it applied, that event's time and how many events it applied. Read by
-- GET /api/v1/admin/projections, `chatbotd projections status` and /metrics.
CREATE TABLE projection_positions (
    projection     text PRIMARY KEY,
    position       bigint      NOT NULL,
    last_event_at  timestamptz NOT NULL,
    events_applied bigint      NOT NULL,
    updated_at     timestamptz NOT NULL
);

-- Write-side state of organizations that authentication reads on every request, written
-- in the transaction of organization.created / suspended / resumed. A missing row (an
-- organization made before this migration) is active and not the platform's.
CREATE TABLE organization_states (
    organization_id uuid PRIMARY KEY,
    suspended       boolean NOT NULL DEFAULT false,
    platform        boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX organization_states_platform_key ON organization_states (platform) WHERE platform;

-- Platform operators are users of the platform organization with this flag.
ALTER TABLE user_credentials ADD COLUMN platform_operator boolean NOT NULL DEFAULT false;

ALTER TABLE organizations ADD COLUMN suspension_reason text,
    ADD COLUMN platform boolean NOT NULL DEFAULT false;
CREATE INDEX organizations_created_idx ON organizations (created_at DESC, id DESC);

-- The correlation and causation ids of the event behind each audit entry.
ALTER TABLE audit_entries ADD COLUMN correlation_id text NOT NULL DEFAULT '',
    ADD COLUMN causation_id text NOT NULL DEFAULT '';
UPDATE audit_entries a SET correlation_id = e.correlation_id, causation_id = e.causation_id
    FROM events e WHERE e.id = a.id;
CREATE INDEX audit_entries_org_correlation_idx ON audit_entries (organization_id, correlation_id, occurred_at DESC, position DESC);

-- The mailer logs each email with the correlation id of the event that caused it.
ALTER TABLE notifications ADD COLUMN correlation_id text NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE notifications DROP COLUMN correlation_id;
DROP INDEX audit_entries_org_correlation_idx;
ALTER TABLE audit_entries DROP COLUMN causation_id, DROP COLUMN correlation_id;
DROP INDEX organizations_created_idx;
ALTER TABLE organizations DROP COLUMN platform, DROP COLUMN suspension_reason;
ALTER TABLE user_credentials DROP COLUMN platform_operator;
DROP TABLE organization_states;
DROP TABLE projection_positions;
