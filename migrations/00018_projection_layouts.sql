-- How each partitioned projector's events are split over queues (PROJECTOR_PARTITIONS).
-- No row is one partition: the projector's own queue. A process started with another
-- count switches the layout: it binds the new queues, unbinds the old ones, puts a fence
-- at the end of each old queue and records the switch here; the old queues are consumed
-- until each fence is reached (drained), then deleted, and only then are the new ones
-- consumed, so that an organization's events keep their order across the switch.

-- +goose Up
CREATE TABLE projection_layouts (
    projection text        PRIMARY KEY,
    partitions int         NOT NULL CHECK (partitions BETWEEN 1 AND 64),
    -- the layout being drained, and which of its partitions have reached their fence
    draining   int         CHECK (draining BETWEEN 1 AND 64),
    drained    int[]       NOT NULL DEFAULT '{}',
    changed_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE projection_layouts;
