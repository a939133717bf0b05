-- Authentication reads only rows that commands write in the same transaction as their
-- events, so a logout, a deactivation, a deletion or a role change counts on the very
-- next request (read models lag by milliseconds). One query per request reads them all.

-- +goose Up
ALTER TABLE user_credentials
    ADD COLUMN organization_id uuid,
    ADD COLUMN active boolean NOT NULL DEFAULT true;
UPDATE user_credentials c SET organization_id = u.organization_id, active = u.status = 'active'
    FROM users u WHERE u.id = c.user_id;
DELETE FROM user_credentials WHERE organization_id IS NULL;
ALTER TABLE user_credentials ALTER COLUMN organization_id SET NOT NULL;

CREATE TABLE session_credentials (
    session_id uuid PRIMARY KEY,
    user_id    uuid    NOT NULL,
    revoked    boolean NOT NULL DEFAULT false
);
INSERT INTO session_credentials (session_id, user_id, revoked)
    SELECT id, user_id, revoked_at IS NOT NULL FROM sessions;

ALTER TABLE role_names ADD COLUMN permissions text[] NOT NULL DEFAULT '{}';
UPDATE role_names n SET permissions = r.permissions FROM roles r WHERE r.id = n.role_id;

-- +goose Down
ALTER TABLE role_names DROP COLUMN permissions;
DROP TABLE session_credentials;
ALTER TABLE user_credentials DROP COLUMN active, DROP COLUMN organization_id;
