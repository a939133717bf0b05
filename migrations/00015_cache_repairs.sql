-- Cache entries that may be stale: the accounts projector records here the users whose
-- committed state it could not write into Redis (Redis down or slow), and a repairer
-- rewrites them once Redis answers again, so no stale entry waits for its TTL.

-- +goose Up
CREATE TABLE cache_repairs (
    kind     text        NOT NULL,
    id       uuid        NOT NULL,
    noted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, id)
);

-- +goose Down
DROP TABLE cache_repairs;
