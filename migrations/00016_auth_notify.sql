-- Authentication state is cached in each process (internal/auth: stateCache). These
-- triggers tell every process, at commit, whose state changed: NOTIFY auth_changed with
-- 'u:<user id>' or 'o:<organization id>'. Only the changes that alter what a request may
-- do notify: a new session, a new token or a password change does not.

-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION notify_auth_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    IF TG_OP = 'DELETE' THEN
        r := OLD;
    ELSE
        r := NEW;
    END IF;
    IF TG_ARGV[0] = 'organization' THEN
        PERFORM pg_notify('auth_changed', 'o:' || r.organization_id::text);
    ELSE
        PERFORM pg_notify('auth_changed', 'u:' || r.user_id::text);
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER user_credentials_auth_changed
    AFTER UPDATE OF active, organization_id, platform_operator OR DELETE ON user_credentials
    FOR EACH ROW EXECUTE FUNCTION notify_auth_changed('user');
CREATE TRIGGER session_credentials_revoked
    AFTER UPDATE ON session_credentials
    FOR EACH ROW WHEN (OLD.revoked IS DISTINCT FROM NEW.revoked OR OLD.user_id IS DISTINCT FROM NEW.user_id)
    EXECUTE FUNCTION notify_auth_changed('user');
CREATE TRIGGER session_credentials_deleted
    AFTER DELETE ON session_credentials
    FOR EACH ROW EXECUTE FUNCTION notify_auth_changed('user');
CREATE TRIGGER role_assignments_auth_changed
    AFTER INSERT OR UPDATE OR DELETE ON role_assignments
    FOR EACH ROW EXECUTE FUNCTION notify_auth_changed('user');
CREATE TRIGGER api_token_credentials_auth_changed
    AFTER UPDATE OF user_id, organization_id, secret_hash, abilities, expires_at OR DELETE ON api_token_credentials
    FOR EACH ROW EXECUTE FUNCTION notify_auth_changed('user');
CREATE TRIGGER role_names_auth_changed
    AFTER UPDATE OR DELETE ON role_names
    FOR EACH ROW EXECUTE FUNCTION notify_auth_changed('organization');
CREATE TRIGGER organization_states_auth_changed
    AFTER INSERT OR UPDATE OR DELETE ON organization_states
    FOR EACH ROW EXECUTE FUNCTION notify_auth_changed('organization');

-- +goose Down
DROP TRIGGER organization_states_auth_changed ON organization_states;
DROP TRIGGER role_names_auth_changed ON role_names;
DROP TRIGGER api_token_credentials_auth_changed ON api_token_credentials;
DROP TRIGGER role_assignments_auth_changed ON role_assignments;
DROP TRIGGER session_credentials_deleted ON session_credentials;
DROP TRIGGER session_credentials_revoked ON session_credentials;
DROP TRIGGER user_credentials_auth_changed ON user_credentials;
DROP FUNCTION notify_auth_changed();
