-- The audit trail's filter indexes in ascending order. Every audit query reads newest
-- first (occurred_at DESC, position DESC), which a B-tree gives as well by scanning an
-- ascending index backward. Declared descending, each new entry went in at the start of
-- its group (an organization, or an organization and a filter's value), before the
-- entries already there: a leaf page that filled up was split in the middle, and its
-- older half, which no later entry reaches, stayed half empty. The indexes of a steady
-- stream of entries were at about half density (BENCHMARKS.md, "The audit trail's indexes
-- in ascending order"). Ascending, a new entry goes in at its group's end, where
-- PostgreSQL splits a page of entries inserted in order so as to leave the older page
-- full. The names stay.
--
-- Rebuilt in the migration's transaction: the projectors' batches, which insert entries,
-- wait for it on a large audit trail (OPERATIONS.md).

-- +goose Up
DROP INDEX audit_entries_org_time_idx, audit_entries_org_action_idx, audit_entries_org_actor_idx,
    audit_entries_org_subject_idx, audit_entries_org_request_idx, audit_entries_org_correlation_idx;
CREATE INDEX audit_entries_org_time_idx ON audit_entries (organization_id, occurred_at, position);
CREATE INDEX audit_entries_org_action_idx ON audit_entries (organization_id, action, occurred_at, position);
CREATE INDEX audit_entries_org_actor_idx ON audit_entries (organization_id, actor_id, occurred_at, position);
CREATE INDEX audit_entries_org_subject_idx ON audit_entries (organization_id, subject_id, occurred_at, position);
CREATE INDEX audit_entries_org_request_idx ON audit_entries (organization_id, request_id, occurred_at, position);
CREATE INDEX audit_entries_org_correlation_idx ON audit_entries (organization_id, correlation_id, occurred_at, position);

-- +goose Down
DROP INDEX audit_entries_org_time_idx, audit_entries_org_action_idx, audit_entries_org_actor_idx,
    audit_entries_org_subject_idx, audit_entries_org_request_idx, audit_entries_org_correlation_idx;
CREATE INDEX audit_entries_org_time_idx ON audit_entries (organization_id, occurred_at DESC, position DESC);
CREATE INDEX audit_entries_org_action_idx ON audit_entries (organization_id, action, occurred_at DESC, position DESC);
CREATE INDEX audit_entries_org_actor_idx ON audit_entries (organization_id, actor_id, occurred_at DESC, position DESC);
CREATE INDEX audit_entries_org_subject_idx ON audit_entries (organization_id, subject_id, occurred_at DESC, position DESC);
CREATE INDEX audit_entries_org_request_idx ON audit_entries (organization_id, request_id, occurred_at DESC, position DESC);
CREATE INDEX audit_entries_org_correlation_idx ON audit_entries (organization_id, correlation_id, occurred_at DESC, position DESC);
