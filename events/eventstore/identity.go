package eventstore

import (
	"context"
	"fmt"

	"github.com/google/uuid"
)

// Identity is the store's id, made when it was first migrated (store_identity). The
// relay stamps it on every envelope it publishes, and consumers keep to their own store's
// events with it.
func Identity(ctx context.Context, q Querier) (uuid.UUID, error) {
	var id uuid.UUID
	if err := q.QueryRow(ctx, `SELECT id FROM store_identity`).Scan(&id); err != nil {
		return uuid.Nil, fmt.Errorf("read the store's identity (run chatbotd migrate): %w", err)
	}
	return id, nil
}
