-- The store's identity: one id, made when the store is first migrated, that every
-- envelope the relay publishes carries (store_id). Consumers never apply another
-- store's events, and a deployment refuses to consume queues that already serve another
-- store (internal/broker: ClaimQueues), so two deployments sharing a broker cannot take
-- each other's events. A streaming replica has the same id: it is the same store.

-- +goose Up
CREATE TABLE store_identity (
    singleton  boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    id         uuid        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO store_identity (id) VALUES (gen_random_uuid());

-- +goose Down
DROP TABLE store_identity;
