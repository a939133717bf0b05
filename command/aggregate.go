// Package command is the write side: aggregates with pure decide/evolve functions, the
// command handlers that load, authorize, decide and append, and their HTTP routes.
package command

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/chatbotsaas/chatbotd/events"
)

// loaded is an aggregate's state rebuilt from its stream, with what every aggregate has.
type loaded[S any] struct {
	State S
	// OrganizationID is the tenant the stream belongs to (from its envelopes).
	OrganizationID uuid.UUID
	Version        int
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

// load folds a stream through evolve.
func load[S any](ctx context.Context, store *events.Store, id uuid.UUID, evolve func(S, events.Event) S) (loaded[S], error) {
	var l loaded[S]
	envs, err := store.ReadStream(ctx, id, 1, 0)
	if err != nil {
		return l, err
	}
	for _, e := range envs {
		ev, err := e.Decode()
		if err != nil {
			return l, err
		}
		l.State = evolve(l.State, ev)
		l.Version = e.StreamVersion
		if e.OrganizationID != nil {
			l.OrganizationID = *e.OrganizationID
		}
		if l.CreatedAt.IsZero() {
			l.CreatedAt = e.OccurredAt
		}
		l.UpdatedAt = e.OccurredAt
	}
	return l, nil
}
