-- Where each consumer on the projector runtime has been checked against the log
-- (projections.Sweep): every event up to (transaction_id, position) in commit order that
-- it should apply, it has applied, or the event was published again to its queue.
-- bound_* is the relay's checkpoint at the last pass, where the next pass stops: an
-- interval after the broker confirmed it, so that what is still on its way through the
-- queue is not taken for lost. redriven counts the events published again.

-- +goose Up
CREATE TABLE projection_sweeps (
    name                 text        PRIMARY KEY,
    transaction_id       xid8        NOT NULL,
    position             bigint      NOT NULL,
    bound_transaction_id xid8,
    bound_position       bigint,
    redriven             bigint      NOT NULL DEFAULT 0,
    swept_at             timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE projection_sweeps;
