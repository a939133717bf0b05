package command

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/command/domain"
	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/auth"
	"github.com/chatbotsaas/chatbotd/internal/rbac"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
)

// UpdateOrganization changes the caller's organization.
func (s *Service) UpdateOrganization(ctx context.Context, meta events.Meta, p auth.Principal, ifMatch IfMatch, c domain.UpdateOrganization) (Result[readmodel.Organization], error) {
	if err := p.Require(rbac.OrganizationWrite); err != nil {
		return Result[readmodel.Organization]{}, err
	}
	if err := c.Validate(); err != nil {
		return Result[readmodel.Organization]{}, err
	}
	id := p.OrganizationID
	l, tok, err := change[domain.Organization]{streamType: events.StreamOrganization, id: id, org: id, notFound: "organization",
		ifMatch: ifMatch, meta: actor(p, meta), evolve: domain.EvolveOrganization,
		decide: func(o domain.Organization) ([]events.Event, error) { return domain.DecideUpdateOrganization(o, c) },
		also: func(o domain.Organization) func(context.Context, pgx.Tx) error {
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
