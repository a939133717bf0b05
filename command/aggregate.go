// Package command is the write side's handlers: each loads an aggregate from the event
// store, authorizes the caller, asks the pure decisions of command/domain, and appends
// what they decided (with any rows that must commit with it); and their HTTP routes.
package command

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
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
func load[S any](ctx context.Context, store *eventstore.Store, id uuid.UUID, evolve func(S, events.Event) S) (loaded[S], error) {
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

// change is a command on an existing aggregate.
type change[S any] struct {
	streamType string
	id         uuid.UUID
	org        uuid.UUID // the caller's organization: another tenant's stream is NOT_FOUND
	notFound   string    // what the NOT_FOUND says ("user", "role", ...)
	ifMatch    IfMatch
	meta       events.Meta
	evolve     func(S, events.Event) S
	decide     func(S) ([]events.Event, error)
	// also, when set, returns rows to write in the append's transaction.
	also func(S) func(context.Context, pgx.Tx) error
}

// run is the shape of every command on an existing aggregate: load it within the
// caller's organization, check If-Match, decide, and append what was decided at the
// loaded version, deciding again when another request won the race (unless If-Match
// pinned the version). Nothing decided: nothing appended, and the token is the current
// version. It returns the aggregate as it is after the command.
func (c change[S]) run(ctx context.Context, store *eventstore.Store) (loaded[S], events.AppendResult, error) {
	type out struct {
		l   loaded[S]
		tok events.AppendResult
	}
	o, err := retryOnConflict(c.ifMatch != nil, func() (out, error) {
		l, err := load(ctx, store, c.id, c.evolve)
		if err != nil {
			return out{}, err
		}
		if l.Version == 0 || l.OrganizationID != c.org {
			return out{}, apperr.NotFound(c.notFound)
		}
		version, err := expected(c.ifMatch, l.Version)
		if err != nil {
			return out{}, err
		}
		evs, err := c.decide(l.State)
		if err != nil {
			return out{}, err
		}
		if len(evs) == 0 {
			return out{l, events.AppendResult{StreamType: c.streamType, StreamID: c.id, Version: l.Version}}, nil
		}
		req := eventstore.AppendRequest{StreamType: c.streamType, StreamID: c.id, ExpectedVersion: version,
			OrganizationID: &c.org, Events: evs, Meta: c.meta}
		if c.also != nil {
			req.Also = c.also(l.State)
		}
		tok, err := store.Append(ctx, req)
		if err != nil {
			return out{}, err
		}
		return out{fold(l, c.evolve, evs, tok.OccurredAt), tok}, nil
	})
	return o.l, o.tok, err
}
