-- Custom roles. role_names and role_assignments are written by commands in the same
-- transaction as their events; they answer the set-based questions (is a name taken, is
-- a role in use, is this the last owner) atomically. roles is the read model.

-- +goose Up
CREATE TABLE role_names (
    organization_id uuid NOT NULL,
    name            text NOT NULL,
    role_id         uuid NOT NULL UNIQUE,
    PRIMARY KEY (organization_id, name)
);

CREATE TABLE role_assignments (
    organization_id uuid    NOT NULL,
    user_id         uuid    NOT NULL,
    role            text    NOT NULL,
    active          boolean NOT NULL DEFAULT true,
    PRIMARY KEY (user_id, role)
);
CREATE INDEX role_assignments_org_role_idx ON role_assignments (organization_id, role);
INSERT INTO role_assignments (organization_id, user_id, role, active)
    SELECT organization_id, id, unnest(roles), status = 'active' FROM users WHERE deleted_at IS NULL;

CREATE TABLE roles (
    id              uuid PRIMARY KEY,
    organization_id uuid        NOT NULL,
    name            text        NOT NULL,
    permissions     text[]      NOT NULL,
    version         integer     NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    deleted_at      timestamptz
);
CREATE INDEX roles_org_name_idx ON roles (organization_id, name) WHERE deleted_at IS NULL;

-- +goose Down
DROP TABLE roles;
DROP TABLE role_assignments;
DROP TABLE role_names;
