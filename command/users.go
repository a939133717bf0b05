package command

import (
	"context"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/auth"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
)

// IfMatch is an optional expected version from the If-Match header.
type IfMatch *int

func expected(ifMatch IfMatch, loaded int) (int, error) {
	if ifMatch == nil {
		return loaded, nil
	}
	if *ifMatch != loaded {
		return 0, apperr.Conflict("If-Match is stale: the resource has changed")
	}
	return *ifMatch, nil
}

func actor(p auth.Principal, meta events.Meta) events.Meta {
	meta.Actor = events.Actor{Type: events.ActorUser, ID: &p.UserID}
	return meta
}

// CreateUser adds a user to the caller's organization.
func (s *Service) CreateUser(ctx context.Context, meta events.Meta, p auth.Principal, c CreateUser) (Result[readmodel.User], error) {
	var res Result[readmodel.User]
	if err := p.Require(auth.UsersWrite); err != nil {
		return res, err
	}
	if err := c.Validate(); err != nil {
		return res, err
	}
	if !p.CanGrant(c.Role) {
		return res, apperr.Invalid("role", "you cannot grant a role with permissions you do not hold")
	}
	evs, err := DecideCreateUser(User{}, c)
	if err != nil {
		return res, err
	}
	hash, err := s.hasher.Hash(ctx, c.Password)
	if err != nil {
		return res, err
	}
	id := uuid.Must(uuid.NewV7())
	res.Token, err = s.store.Append(ctx, events.AppendRequest{StreamType: events.StreamUser, StreamID: id,
		ExpectedVersion: 0, OrganizationID: &p.OrganizationID, Events: evs, Meta: actor(p, meta),
		Also: func(ctx context.Context, tx pgx.Tx) error {
			if err := reserveEmail(ctx, tx, c.Email, id); err != nil {
				return err
			}
			return setPassword(ctx, tx, id, hash)
		}})
	if err != nil {
		return res, err
	}
	res.Data = userView(id, fold(loaded[User]{OrganizationID: p.OrganizationID}, EvolveUser, evs, res.Token.OccurredAt))
	return res, nil
}

// changeUser is the shape of every command on an existing user: load within the tenant,
// decide, append at the loaded (or If-Match) version, with optional rows in the same
// transaction.
func (s *Service) changeUser(ctx context.Context, meta events.Meta, p auth.Principal, id uuid.UUID, ifMatch IfMatch,
	decide func(User) ([]events.Event, error), also func(User, []events.Event) func(context.Context, pgx.Tx) error,
) (Result[readmodel.User], error) {
	return retryOnConflict(ifMatch != nil, func() (Result[readmodel.User], error) {
		var res Result[readmodel.User]
		l, err := s.loadUser(ctx, p.OrganizationID, id)
		if err != nil {
			return res, err
		}
		version, err := expected(ifMatch, l.Version)
		if err != nil {
			return res, err
		}
		evs, err := decide(l.State)
		if err != nil {
			return res, err
		}
		if len(evs) == 0 { // nothing changes: answer with the current state and version
			res.Data = userView(id, l)
			res.Token = events.AppendResult{StreamType: events.StreamUser, StreamID: id, Version: l.Version}
			return res, nil
		}
		req := events.AppendRequest{StreamType: events.StreamUser, StreamID: id, ExpectedVersion: version,
			OrganizationID: &p.OrganizationID, Events: evs, Meta: actor(p, meta)}
		if also != nil {
			req.Also = also(l.State, evs)
		}
		if res.Token, err = s.store.Append(ctx, req); err != nil {
			return res, err
		}
		res.Data = userView(id, fold(l, EvolveUser, evs, res.Token.OccurredAt))
		return res, nil
	})
}

// UpdateUser changes a user's name, email or status.
func (s *Service) UpdateUser(ctx context.Context, meta events.Meta, p auth.Principal, id uuid.UUID, ifMatch IfMatch, c UpdateUser) (Result[readmodel.User], error) {
	if err := p.Require(auth.UsersWrite); err != nil {
		return Result[readmodel.User]{}, err
	}
	if err := c.Validate(); err != nil {
		return Result[readmodel.User]{}, err
	}
	c.Actor = p.UserID
	return s.changeUser(ctx, meta, p, id, ifMatch,
		func(u User) ([]events.Event, error) { return DecideUpdateUser(id, u, c) },
		func(u User, evs []events.Event) func(context.Context, pgx.Tx) error {
			if c.Email == nil || *c.Email == u.Email {
				return nil
			}
			return func(ctx context.Context, tx pgx.Tx) error {
				if err := releaseEmail(ctx, tx, id); err != nil {
					return err
				}
				return reserveEmail(ctx, tx, *c.Email, id)
			}
		})
}

// DeleteUser soft-deletes a user: the email is free again and the history stays.
func (s *Service) DeleteUser(ctx context.Context, meta events.Meta, p auth.Principal, id uuid.UUID, ifMatch IfMatch) (Result[readmodel.User], error) {
	if err := p.Require(auth.UsersWrite); err != nil {
		return Result[readmodel.User]{}, err
	}
	return s.changeUser(ctx, meta, p, id, ifMatch,
		func(u User) ([]events.Event, error) { return DecideDeleteUser(id, u, p.UserID) },
		func(User, []events.Event) func(context.Context, pgx.Tx) error {
			return func(ctx context.Context, tx pgx.Tx) error {
				if err := releaseEmail(ctx, tx, id); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, `DELETE FROM user_credentials WHERE user_id = $1`, id)
				return err
			}
		})
}

// AssignRole gives a user a built-in role the caller could grant.
func (s *Service) AssignRole(ctx context.Context, meta events.Meta, p auth.Principal, id uuid.UUID, role string) (Result[readmodel.User], error) {
	if err := s.canManageRole(p, role); err != nil {
		return Result[readmodel.User]{}, err
	}
	return s.changeUser(ctx, meta, p, id, nil, func(u User) ([]events.Event, error) { return DecideAssignRole(u, role) }, nil)
}

// RemoveRole takes a role from a user.
func (s *Service) RemoveRole(ctx context.Context, meta events.Meta, p auth.Principal, id uuid.UUID, role string) (Result[readmodel.User], error) {
	if err := s.canManageRole(p, role); err != nil {
		return Result[readmodel.User]{}, err
	}
	return s.changeUser(ctx, meta, p, id, nil, func(u User) ([]events.Event, error) { return DecideRemoveRole(u, role) }, nil)
}

func (s *Service) canManageRole(p auth.Principal, role string) error {
	if err := p.Require(auth.UsersWrite); err != nil {
		return err
	}
	if !auth.IsBuiltinRole(role) {
		return apperr.NotFound("role")
	}
	if !p.CanGrant(role) {
		return apperr.New(apperr.CodeForbidden, "You cannot grant or remove a role with permissions you do not hold")
	}
	return nil
}

// UpdateOrganization changes the caller's organization.
func (s *Service) UpdateOrganization(ctx context.Context, meta events.Meta, p auth.Principal, ifMatch IfMatch, c UpdateOrganization) (Result[readmodel.Organization], error) {
	if err := p.Require(auth.OrganizationWrite); err != nil {
		return Result[readmodel.Organization]{}, err
	}
	if err := c.Validate(); err != nil {
		return Result[readmodel.Organization]{}, err
	}
	id := p.OrganizationID
	return retryOnConflict(ifMatch != nil, func() (Result[readmodel.Organization], error) {
		var res Result[readmodel.Organization]
		l, err := load(ctx, s.store, id, EvolveOrganization)
		if err != nil {
			return res, err
		}
		version, err := expected(ifMatch, l.Version)
		if err != nil {
			return res, err
		}
		evs, err := DecideUpdateOrganization(l.State, c)
		if err != nil {
			return res, err
		}
		if len(evs) > 0 {
			req := events.AppendRequest{StreamType: events.StreamOrganization, StreamID: id, ExpectedVersion: version,
				OrganizationID: &id, Events: evs, Meta: actor(p, meta)}
			if c.Slug != nil && *c.Slug != l.State.Slug {
				req.Also = func(ctx context.Context, tx pgx.Tx) error { return reserveSlug(ctx, tx, *c.Slug, id) }
			}
			if res.Token, err = s.store.Append(ctx, req); err != nil {
				return res, err
			}
			l = fold(l, EvolveOrganization, evs, res.Token.OccurredAt)
		} else {
			res.Token = events.AppendResult{StreamType: events.StreamOrganization, StreamID: id, Version: l.Version}
		}
		o := l.State
		res.Data = readmodel.Organization{ID: id, Name: o.Name, Slug: o.Slug, Status: o.Status,
			CreatedAt: l.CreatedAt, UpdatedAt: l.UpdatedAt, Version: l.Version}
		return res, nil
	})
}
