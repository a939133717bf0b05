-- Transactions marked as never appending events, which readers in commit order (the
-- relay, the chainer, replays) need not wait for: the projectors' group batches, the
-- settler's flush, the relay's checkpoint, the chainer's links (eventstore.NeverAppends,
-- and the horizon, eventstore's readable). The mark is taken
-- by chatbotd_never_appends, only while the transaction has no transaction id (it has
-- written nothing yet), and a marked transaction cannot insert into events: no event of
-- a transaction the readers leave out can exist.

-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION chatbotd_never_appends(mark bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'a transaction that has written cannot be marked as never appending';
    END IF;
    PERFORM pg_advisory_xact_lock_shared(mark);
    PERFORM set_config('chatbotd.appends', 'never', true);
END $$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION events_refuse_marked_appends() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('chatbotd.appends', true) = 'never' THEN
        RAISE EXCEPTION 'this transaction is marked as never appending events';
    END IF;
    RETURN NULL;
END $$;
-- +goose StatementEnd

CREATE TRIGGER events_refuse_marked_appends BEFORE INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_marked_appends();

-- +goose Down
DROP TRIGGER events_refuse_marked_appends ON events;
DROP FUNCTION events_refuse_marked_appends();
DROP FUNCTION chatbotd_never_appends(bigint);
