package projections

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/cache"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
)

// AccountsName is the accounts projector's name: organizations, users and sessions.
const AccountsName = readmodel.AccountsProjection

// Accounts builds the organizations, users, sessions, roles and API tokens read models, and after each
// commit writes the users it changed into the cache.
type Accounts struct {
	pool   *pgxpool.Pool
	cache  *cache.Cache // nil: no cache
	logger *slog.Logger
}

// NewAccounts returns the projector.
func NewAccounts(pool *pgxpool.Pool, c *cache.Cache, logger *slog.Logger) *Accounts {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Accounts{pool: pool, cache: c, logger: logger}
}

func (*Accounts) Name() string { return AccountsName }

func (*Accounts) Bindings() []string {
	return []string{events.StreamOrganization + ".*", events.StreamUser + ".*", events.StreamSession + ".*",
		events.StreamToken + ".*", events.StreamRole + ".*"}
}

// Apply changes the read models for one event.
func (a *Accounts) Apply(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
	ev, err := e.Decode()
	if err != nil {
		return err
	}
	id, v, at := e.StreamID, e.StreamVersion, e.OccurredAt
	switch ev := ev.(type) {
	case events.OrganizationCreated:
		_, err = tx.Exec(ctx, `INSERT INTO organizations (id, name, slug, status, platform, version, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $7)`, id, ev.Name, ev.Slug, ev.Status, ev.Platform, v, at)
	case events.OrganizationSuspended:
		_, err = tx.Exec(ctx, `UPDATE organizations SET status = 'suspended', suspension_reason = $2, version = $3,
			updated_at = $4 WHERE id = $1`, id, ev.Reason, v, at)
	case events.OrganizationResumed:
		_, err = tx.Exec(ctx, `UPDATE organizations SET status = 'active', suspension_reason = NULL, version = $2,
			updated_at = $3 WHERE id = $1`, id, v, at)
	case events.OrganizationUpdated:
		name, slug := changed(ev.Changes, "name"), changed(ev.Changes, "slug")
		_, err = tx.Exec(ctx, `UPDATE organizations SET name = coalesce($2, name), slug = coalesce($3, slug),
			version = $4, updated_at = $5 WHERE id = $1`, id, name, slug, v, at)
	case events.UserCreated:
		_, err = tx.Exec(ctx, `INSERT INTO users (id, organization_id, name, email, status, roles, version, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)`, id, e.OrganizationID, ev.Name, ev.Email, ev.Status, ev.Roles, v, at)
	case events.UserUpdated:
		name, email := changed(ev.Changes, "name"), changed(ev.Changes, "email")
		_, err = tx.Exec(ctx, `UPDATE users SET name = coalesce($2, name), email = coalesce($3, email),
			version = $4, updated_at = $5 WHERE id = $1`, id, name, email, v, at)
	case events.UserDeactivated:
		err = a.setUser(ctx, tx, id, v, at, `status = 'deactivated'`)
	case events.UserReactivated:
		err = a.setUser(ctx, tx, id, v, at, `status = 'active'`)
	case events.UserDeleted:
		err = a.setUser(ctx, tx, id, v, at, `deleted_at = $3`)
	case events.UserPasswordChanged:
		err = a.setUser(ctx, tx, id, v, at, `status = status`) // the version and time move on
	case events.UserRoleAssigned:
		_, err = tx.Exec(ctx, `UPDATE users SET roles = CASE WHEN $2 = ANY(roles) THEN roles ELSE array_append(roles, $2) END,
			version = $3, updated_at = $4 WHERE id = $1`, id, ev.Role, v, at)
	case events.UserRoleRemoved:
		_, err = tx.Exec(ctx, `UPDATE users SET roles = array_remove(roles, $2), version = $3, updated_at = $4
			WHERE id = $1`, id, ev.Role, v, at)
	case events.SessionStarted:
		var userID uuid.UUID
		if userID, err = uuid.Parse(ev.UserID); err != nil {
			return fmt.Errorf("session.started: user_id: %w", err)
		}
		_, err = tx.Exec(ctx, `INSERT INTO sessions (id, user_id, organization_id, generation, version, created_at)
			VALUES ($1, $2, $3, 1, $4, $5)`, id, userID, e.OrganizationID, v, at)
	case events.SessionRefreshed:
		_, err = tx.Exec(ctx, `UPDATE sessions SET generation = $2, version = $3 WHERE id = $1`, id, ev.Generation, v)
	case events.SessionRevoked:
		_, err = tx.Exec(ctx, `UPDATE sessions SET revoked_at = $2, revoked_reason = $3, version = $4
			WHERE id = $1`, id, at, ev.Reason, v)
	case events.RoleCreated:
		_, err = tx.Exec(ctx, `INSERT INTO roles (id, organization_id, name, permissions, version, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $6)`, id, e.OrganizationID, ev.Name, ev.Permissions, v, at)
	case events.RoleUpdated:
		var name *string
		if ev.Name != nil {
			name = &ev.Name.New
		}
		_, err = tx.Exec(ctx, `UPDATE roles SET name = coalesce($2, name), permissions = coalesce($3, permissions),
			version = $4, updated_at = $5 WHERE id = $1`, id, name, ev.Permissions, v, at)
	case events.RoleDeleted:
		_, err = tx.Exec(ctx, `UPDATE roles SET deleted_at = $2, version = $3, updated_at = $2 WHERE id = $1`, id, at, v)
	case events.TokenCreated:
		_, err = tx.Exec(ctx, `INSERT INTO api_tokens (id, organization_id, user_id, name, abilities, expires_at, version, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, id, e.OrganizationID, ev.UserID, ev.Name, ev.Abilities, ev.ExpiresAt, v, at)
	case events.TokenRevoked:
		_, err = tx.Exec(ctx, `UPDATE api_tokens SET revoked_at = $2, version = $3 WHERE id = $1`, id, at, v)
	default:
		// Other events of these streams (e.g. session.reuse_detected) change no column
		// here; recording their version is enough.
		switch e.StreamType {
		case events.StreamUser:
			_, err = tx.Exec(ctx, `UPDATE users SET version = $2 WHERE id = $1`, id, v)
		case events.StreamSession:
			_, err = tx.Exec(ctx, `UPDATE sessions SET version = $2 WHERE id = $1`, id, v)
		}
	}
	return err
}

// ApplySet writes a run of user.created events as one INSERT (a batch of sign-ups, an
// import, a replay); every other event is applied alone, in order.
func (a *Accounts) ApplySet(ctx context.Context, tx pgx.Tx, envs []events.Envelope) error {
	var (
		ids                         []uuid.UUID
		orgs                        []*uuid.UUID
		names, emails, statuses, rs []string
		versions                    []int32
		times                       []time.Time
	)
	take := func(e events.Envelope) (bool, error) {
		u, ok, err := decodeAs[events.UserCreated](e)
		if err != nil || !ok || u.Roles == nil { // without roles, Apply says what is wrong
			return false, err
		}
		ids, orgs, names, emails = append(ids, e.StreamID), append(orgs, e.OrganizationID), append(names, u.Name), append(emails, u.Email)
		statuses, rs, versions, times = append(statuses, u.Status), append(rs, textArray(u.Roles)), append(versions, int32(e.StreamVersion)), append(times, e.OccurredAt)
		return true, nil
	}
	flush := func() error {
		if len(ids) == 0 {
			return nil
		}
		_, err := tx.Exec(ctx, `INSERT INTO users (id, organization_id, name, email, status, roles, version, created_at, updated_at)
			SELECT u.id, u.org, u.name, u.email, u.status, u.roles::text[], u.v, u.at, u.at
			FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[], $8::timestamptz[])
				AS u(id, org, name, email, status, roles, v, at)`, ids, orgs, names, emails, statuses, rs, versions, times)
		// New slices: a pipelined statement holds its arguments until it is sent.
		ids, orgs, names, emails, statuses, rs, versions, times = nil, nil, nil, nil, nil, nil, nil, nil
		return err
	}
	return applyRuns(envs, take, flush, func(e events.Envelope) error { return a.Apply(ctx, tx, e) })
}

func (a *Accounts) setUser(ctx context.Context, tx pgx.Tx, id uuid.UUID, v int, at any, set string) error {
	_, err := tx.Exec(ctx, `UPDATE users SET `+set+`, version = $2, updated_at = $3 WHERE id = $1`, id, v, at)
	return err
}

func changed(c map[string]events.Change, field string) *string {
	if ch, ok := c[field]; ok {
		return &ch.New
	}
	return nil
}

// AfterCommit writes each changed user's committed state into the cache. The cache
// refuses an older version over a newer one, so a late or repeated call is harmless.
// Users it cannot write (Redis down) are recorded in cache_repairs for RepairCache; it
// fails only when that record cannot be written either, and the batch then comes back.
func (a *Accounts) AfterCommit(ctx context.Context, batch []events.Envelope) error {
	return a.AfterApplied(ctx, batch, nil)
}

// AfterApplied is AfterCommit told what the batch's transaction applied: a user whose
// last event there is a user.created it applied is cached as that event wrote the row,
// without reading the row back (see createdEntries); the others are read back.
func (a *Accounts) AfterApplied(ctx context.Context, batch, applied []events.Envelope) error {
	if a.cache == nil {
		return nil
	}
	last := map[uuid.UUID]events.Envelope{}
	var ids []uuid.UUID
	for _, e := range batch {
		if e.StreamType != events.StreamUser {
			continue
		}
		l, seen := last[e.StreamID]
		if !seen {
			ids = append(ids, e.StreamID)
		}
		if !seen || e.StreamVersion > l.StreamVersion {
			last[e.StreamID] = e
		}
	}
	if len(ids) == 0 {
		return nil
	}
	err := a.refresh(ctx, ids, createdEntries(last, applied))
	if err == nil {
		return nil
	}
	a.logger.Warn("cache refresh failed: users recorded for repair", "users", len(ids), "error", err)
	if _, rerr := a.pool.Exec(ctx, `INSERT INTO cache_repairs (kind, id) SELECT 'user', unnest($1::uuid[])
		ON CONFLICT DO NOTHING`, ids); rerr != nil {
		return fmt.Errorf("cache refresh: %w; recording the repair: %w", err, rerr)
	}
	return nil
}

// createdEntries are the cache entries of the users whose last event (last, by stream,
// of the batch delivered) is a user.created that the batch's transaction applied (in
// applied): at its commit their row is what that event wrote, and nothing else of the
// stream was applied after it (a stream's events are applied in order). An event read
// from the log to fill a gap comes before the delivered one that needed it.
//
// Why: the settler, which must finish a batch before the next one is handed to it, spent
// more CPU on reading every user back and caching it than the consumer on its whole
// apply, in a backlog of sign-ups (BENCHMARKS.md, "The cache entries of new users
// written without reading them back").
func createdEntries(last map[uuid.UUID]events.Envelope, applied []events.Envelope) map[uuid.UUID]cache.Entry {
	out := map[uuid.UUID]cache.Entry{}
	for _, e := range applied {
		l, ok := last[e.StreamID]
		if !ok || e.StreamVersion < l.StreamVersion || e.Type != (events.UserCreated{}).EventType() {
			continue
		}
		entry, ok := createdEntry(e)
		if ok {
			out[e.StreamID] = entry
		}
	}
	return out
}

// createdEntry is the entry of the row that a user.created event writes (ApplySet), or
// false when the row could differ from it: an event that does not decode as ApplySet
// takes it, no organization, or a time finer than PostgreSQL keeps.
func createdEntry(e events.Envelope) (cache.Entry, bool) {
	u, ok, err := decodeAs[events.UserCreated](e)
	if err != nil || !ok || u.Roles == nil || e.OrganizationID == nil || e.OccurredAt.Nanosecond()%1000 != 0 {
		return cache.Entry{}, false
	}
	entry, err := readmodel.UserEntryOf(readmodel.User{ID: e.StreamID, OrganizationID: *e.OrganizationID, Name: u.Name,
		Email: u.Email, Status: u.Status, Roles: u.Roles, CreatedAt: e.OccurredAt, UpdatedAt: e.OccurredAt, Version: e.StreamVersion})
	return entry, err == nil
}

// refresh writes the users' committed state into the cache, known holding some of them
// already: one query for the others and one Redis round trip.
func (a *Accounts) refresh(ctx context.Context, ids []uuid.UUID, known map[uuid.UUID]cache.Entry) error {
	var unknown []uuid.UUID
	for _, id := range ids {
		if _, ok := known[id]; !ok {
			unknown = append(unknown, id)
		}
	}
	entries := known
	if len(unknown) > 0 {
		read, err := readmodel.UserEntries(ctx, a.pool, unknown)
		if err != nil {
			return err
		}
		if entries == nil {
			entries = read
		} else {
			maps.Copy(entries, read)
		}
	}
	keys, values := make([]string, len(ids)), make([]cache.Entry, len(ids))
	for i, id := range ids {
		keys[i], values[i] = a.cache.Key("user", id.String()), entries[id]
	}
	return a.cache.SetMany(ctx, keys, values)
}

// RepairCache rewrites, every interval until ctx ends, the cache entries recorded in
// cache_repairs, and forgets them once written. Several processes may run it: each
// takes rows the others have not locked.
func (a *Accounts) RepairCache(ctx context.Context, interval time.Duration) {
	if a.cache == nil {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for {
			n, err := a.repairSome(ctx, 500)
			if err != nil {
				a.logger.Debug("cache repair: will try again", "error", err)
				break
			}
			if n > 0 {
				a.logger.Info("cache repaired", "users", n)
			}
			if n < 500 {
				break
			}
		}
	}
}

// repairSome rewrites up to limit recorded entries and forgets them, in one transaction:
// when Redis fails, they stay recorded.
func (a *Accounts) repairSome(ctx context.Context, limit int) (int, error) {
	var n int
	err := pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT id FROM cache_repairs WHERE kind = 'user' ORDER BY noted_at
			LIMIT $1 FOR UPDATE SKIP LOCKED`, limit)
		if err != nil {
			return err
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
		if err != nil || len(ids) == 0 {
			return err
		}
		if err := a.refresh(ctx, ids, nil); err != nil {
			return err
		}
		n = len(ids)
		_, err = tx.Exec(ctx, `DELETE FROM cache_repairs WHERE kind = 'user' AND id = ANY($1)`, ids)
		return err
	})
	return n, err
}
