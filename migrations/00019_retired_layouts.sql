-- A projector's own queues can be retired (partitions = 0): the projectors now share the
-- queue of their group ("projections"), and the queues an earlier version gave each of
-- them drain as an old layout does, with nothing to replace them.

-- +goose Up
ALTER TABLE projection_layouts DROP CONSTRAINT projection_layouts_partitions_check,
    ADD CONSTRAINT projection_layouts_partitions_check CHECK (partitions BETWEEN 0 AND 64);

-- +goose Down
DELETE FROM projection_layouts WHERE partitions = 0;
ALTER TABLE projection_layouts DROP CONSTRAINT projection_layouts_partitions_check,
    ADD CONSTRAINT projection_layouts_partitions_check CHECK (partitions BETWEEN 1 AND 64);
