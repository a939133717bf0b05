-- The responder finds candidate answers by nearest-neighbour search on trigrams (GiST),
-- which returns the closest questions without scoring every entry of a large knowledge
-- base. btree_gist lets the index lead with the chatbot.

-- +goose Up
CREATE EXTENSION IF NOT EXISTS btree_gist;
CREATE INDEX knowledge_index_knn_idx ON knowledge_index USING gist (chatbot_id, question gist_trgm_ops);
DROP INDEX knowledge_index_trgm_idx;

-- +goose Down
CREATE INDEX knowledge_index_trgm_idx ON knowledge_index USING gin (question gin_trgm_ops);
DROP INDEX knowledge_index_knn_idx;
