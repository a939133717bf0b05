package command

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/auth"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
)

// UpdateOrganization changes the caller's organization.
func (s *Service) UpdateOrganization(ctx context.Context, meta events.Meta, p auth.Principal, ifMatch IfMatch, c UpdateOrganization) (Result[readmodel.Organization], error) {
	if err := p.Require(auth.OrganizationWrite); err != nil {
		return Result[readmodel.Organization]{}, err
	}
	if err := c.Validate(); err != nil {
		return Result[readmodel.Organization]{}, err
	}
	id := p.OrganizationID
	l, tok, err := change[Organization]{streamType: events.StreamOrganization, id: id, org: id, notFound: "organization",
		ifMatch: ifMatch, meta: actor(p, meta), evolve: EvolveOrganization,
		decide: func(o Organization) ([]events.Event, error) { return DecideUpdateOrganization(o, c) },
		also: func(o Organization) func(context.Context, pgx.Tx) error {
			if c.Slug == nil || *c.Slug == o.Slug {
				return nil
			}
			return func(ctx context.Context, tx pgx.Tx) error { return reserveSlug(ctx, tx, *c.Slug, id) }
		}}.run(ctx, s.store)
	if err != nil {
		return Result[readmodel.Organization]{}, err
	}
	o := l.State
	return Result[readmodel.Organization]{Token: tok, Data: readmodel.Organization{ID: id, Name: o.Name, Slug: o.Slug,
		Status: o.Status, CreatedAt: l.CreatedAt, UpdatedAt: l.UpdatedAt, Version: l.Version}}, nil
}
