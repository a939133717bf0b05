// Package readmodel is the shape of the read models that more than one side reads: the
// projectors write the cache from it and the query side answers from it, so a record's
// JSON is the same on every path.
package readmodel

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	segjson "github.com/segmentio/encoding/json"

	"github.com/chatbotsaas/chatbotd/internal/cache"
	"github.com/chatbotsaas/chatbotd/internal/db"
)

// Querier is a pool, a connection or a transaction.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// User is the API's user object. It never holds a password hash.
type User struct {
	ID             uuid.UUID `json:"id"`
	OrganizationID uuid.UUID `json:"organization_id"`
	Name           string    `json:"name"`
	Email          string    `json:"email"`
	Status         string    `json:"status"`
	Roles          []string  `json:"roles"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
	Version        int       `json:"-"`
}

// UserColumns are the columns ScanUser reads, in order.
const UserColumns = `id, organization_id, name, email, status, roles, created_at, updated_at, version`

// ScanUser reads a row selected with UserColumns.
func ScanUser(row pgx.Row) (User, error) {
	var u User
	err := row.Scan(u.columns()...)
	u.normalize()
	return u, err
}

// columns are the scan targets of UserColumns, in order.
func (u *User) columns() []any {
	return []any{&u.ID, &u.OrganizationID, &u.Name, &u.Email, &u.Status, &u.Roles, &u.CreatedAt, &u.UpdatedAt, &u.Version}
}

func (u *User) normalize() {
	u.CreatedAt, u.UpdatedAt = u.CreatedAt.UTC(), u.UpdatedAt.UTC()
	if u.Roles == nil {
		u.Roles = []string{}
	}
}

// ErrNotFound is returned for a missing (or deleted) record.
var ErrNotFound = errors.New("not found")

// LoadUser reads one live user; a deleted one is ErrNotFound, with its version so that
// a cache can record the deletion.
func LoadUser(ctx context.Context, q Querier, id uuid.UUID) (User, error) {
	u, err := scanUser(q.QueryRow(ctx, `SELECT `+UserColumns+`, deleted_at IS NOT NULL FROM users WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return User{ID: id}, ErrNotFound
	}
	return u, err
}

// scanUser reads a row of UserColumns and the deleted flag; a deleted user is ErrNotFound
// with its id, organization and version.
func scanUser(row pgx.Row) (User, error) {
	var deleted bool
	var u User
	if err := row.Scan(append(u.columns(), &deleted)...); err != nil {
		return u, err
	}
	u.normalize()
	if deleted {
		return User{ID: u.ID, Version: u.Version, OrganizationID: u.OrganizationID}, ErrNotFound
	}
	return u, nil
}

// Organization is the API's organization object.
type Organization struct {
	ID     uuid.UUID `json:"id"`
	Name   string    `json:"name"`
	Slug   string    `json:"slug"`
	Status string    `json:"status"` // active or suspended
	// SuspensionReason is the platform operator's reason while suspended.
	SuspensionReason *string   `json:"suspension_reason,omitempty"`
	CreatedAt        time.Time `json:"created_at"`
	UpdatedAt        time.Time `json:"updated_at"`
	Version          int       `json:"-"`
}

// LoadOrganization reads one organization.
func LoadOrganization(ctx context.Context, q Querier, id uuid.UUID) (Organization, error) {
	var o Organization
	err := q.QueryRow(ctx, `SELECT id, name, slug, status, suspension_reason, created_at, updated_at, version
		FROM organizations WHERE id = $1`, id).Scan(&o.ID, &o.Name, &o.Slug, &o.Status, &o.SuspensionReason,
		&o.CreatedAt, &o.UpdatedAt, &o.Version)
	if errors.Is(err, pgx.ErrNoRows) {
		return o, ErrNotFound
	}
	o.CreatedAt, o.UpdatedAt = o.CreatedAt.UTC(), o.UpdatedAt.UTC()
	return o, err
}

// AppliedVersion is the last version of a stream that a projection has applied (0 when
// none).
func AppliedVersion(ctx context.Context, q Querier, projection string, stream uuid.UUID) (int, error) {
	var v int
	err := q.QueryRow(ctx, `SELECT version FROM projection_streams WHERE projection = $1 AND stream_id = $2`,
		projection, stream).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	return v, err
}

// appliedVersions is AppliedVersion for several streams in one query; a stream the
// projection has not seen is left out. One index lookup per stream, whatever the
// statistics say (the lateral subquery, kept from flattening by OFFSET 0): "stream_id =
// ANY($2)" can be planned as a scan of every stream of the projection.
//
// It runs at every notification that a projection moved on while reads wait for it, with
// a generic plan (db.QueryGeneric): PostgreSQL planned it again each time.
func appliedVersions(ctx context.Context, q WaitQuerier, projection string, streams []uuid.UUID) (map[uuid.UUID]int, error) {
	const sql = `SELECT ps.stream_id, ps.version FROM unnest($2::uuid[]) AS s(id),
		LATERAL (SELECT stream_id, version FROM projection_streams WHERE projection = $1 AND stream_id = s.id OFFSET 0) AS ps`
	type applied struct {
		stream  uuid.UUID
		version int
	}
	scan := func(r pgx.CollectableRow) (applied, error) {
		var a applied
		err := r.Scan(&a.stream, &a.version)
		return a, err
	}
	found, err := db.QueryGeneric(ctx, q, scan, sql, projection, streams)
	if err != nil {
		return nil, err
	}
	out := make(map[uuid.UUID]int, len(found))
	for _, a := range found {
		out[a.stream] = a.version
	}
	return out, nil
}

// UserEntry is a user's cache entry as of the read model now: the user's JSON, or a
// tombstone for a deleted one.
func UserEntry(ctx context.Context, q Querier, id uuid.UUID) (cache.Entry, error) {
	return userEntry(LoadUser(ctx, q, id))
}

func userEntry(u User, err error) (cache.Entry, error) {
	if errors.Is(err, ErrNotFound) {
		return cache.Entry{Version: u.Version}, nil
	}
	if err != nil {
		return cache.Entry{}, err
	}
	b, err := encodeUser(u)
	return cache.Entry{Version: u.Version, Payload: b}, err
}

// encodeUser writes a user's document for the cache with segmentio/encoding's json, the
// event stream's hot paths' library (events/codec.go): the accounts projector writes one
// for every user a batch changes, and encoding/json's took a quarter of its after-commit
// work's CPU. The bytes are encoding/json's (TestUserDocumentIsEncodingJSONs).
func encodeUser(u User) ([]byte, error) { return segjson.Marshal(u) }

// UserEntryOf is the cache entry that UserEntry gives for u's row: what a projector that
// has just written the row can cache without reading it back.
func UserEntryOf(u User) (cache.Entry, error) {
	u.normalize()
	return userEntry(u, nil)
}

// UserEntries is UserEntry for many users, read in one query.
func UserEntries(ctx context.Context, q Querier, ids []uuid.UUID) (map[uuid.UUID]cache.Entry, error) {
	// A lookup per id (see projections' stream lock: "id = ANY($1)" may be planned as a
	// scan of the whole table while its statistics are stale).
	rows, err := q.Query(ctx, `SELECT u.* FROM unnest($1::uuid[]) AS w(id),
		LATERAL (SELECT `+UserColumns+`, deleted_at IS NOT NULL FROM users WHERE users.id = w.id OFFSET 0) AS u`, ids)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make(map[uuid.UUID]cache.Entry, len(ids))
	for rows.Next() {
		u, err := scanUser(rows)
		e, err := userEntry(u, err)
		if err != nil {
			return nil, err
		}
		out[u.ID] = e
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for _, id := range ids {
		if _, ok := out[id]; !ok {
			out[id] = cache.Entry{} // no such user: a tombstone, as UserEntry gives
		}
	}
	return out, nil
}

// AccountsProjection is the projection that builds organizations, users and sessions.
const AccountsProjection = "accounts"

// ChatbotsProjection is the projection that builds chatbots.
const ChatbotsProjection = "chatbots"

// ConversationsProjection is the projection that builds conversations and messages.
const ConversationsProjection = "conversations"

// AuditProjection is the projection that builds the audit trail.
const AuditProjection = "audit"

// WebhooksProjection is the projection that keeps webhook subscriptions and deliveries.
const WebhooksProjection = "webhooks"

// AnalyticsProjection is the projection that counts conversations, messages and replies.
const AnalyticsProjection = "analytics"

// NotificationsProjection writes the emails the mailer sends.
const NotificationsProjection = "notifications"

// CachedUser reads a user through the cache: a hit answers from Redis, a miss is filled
// once from the read model; with Redis down it reads the read model.
//
// atLeast is the version a consistency token waited for (0: none). The projector writes
// the cache after its commit, so right after the wait the cached entry may still be the
// previous version: then the row is read (and cached, never over a newer entry).
func CachedUser(ctx context.Context, c *cache.Cache, q Querier, id uuid.UUID, atLeast int) (User, error) {
	entry, err := cachedUserEntry(ctx, c, q, id, atLeast)
	if err != nil {
		return User{}, err
	}
	var u User
	if err := json.Unmarshal(entry.Payload, &u); err != nil {
		return User{}, err
	}
	u.Version = entry.Version
	return u, nil
}

// UserDocument is a user as the cache keeps it: its JSON (User's encoding), with the
// fields a reader checks before it answers the document as it is.
type UserDocument struct {
	JSON           json.RawMessage
	OrganizationID uuid.UUID
	Version        int
}

// CachedUserDocument is CachedUser for a reader that answers the user's JSON unchanged:
// only the organization is decoded, where CachedUser decodes the whole document for its
// caller to encode it again (a fifth of a cached read's CPU in chatbotd, BENCHMARKS.md).
func CachedUserDocument(ctx context.Context, c *cache.Cache, q Querier, id uuid.UUID, atLeast int) (UserDocument, error) {
	entry, err := cachedUserEntry(ctx, c, q, id, atLeast)
	if err != nil {
		return UserDocument{}, err
	}
	org, err := documentOrganization(entry.Payload)
	if err != nil {
		return UserDocument{}, err
	}
	return UserDocument{JSON: entry.Payload, OrganizationID: org, Version: entry.Version}, nil
}

// documentOrganization is a cached user document's organization (the tenancy check).
// A document userEntry wrote starts with the user's id and organization, each 36
// characters, so the organization is read at its place: decoding the document for it
// was the largest part of a cached read's own CPU (BENCHMARKS.md, issue 23's eighth
// pass). A document of any other shape is decoded.
func documentOrganization(doc []byte) (uuid.UUID, error) {
	const head, between = `{"id":"`, `","organization_id":"`
	const at = len(head) + 36 + len(between)
	if len(doc) > at+36 && string(doc[:len(head)]) == head && string(doc[len(head)+36:at]) == between && doc[at+36] == '"' {
		if _, err := uuid.ParseBytes(doc[len(head) : len(head)+36]); err == nil {
			if org, err := uuid.ParseBytes(doc[at : at+36]); err == nil {
				return org, nil
			}
		}
	}
	var u struct {
		OrganizationID uuid.UUID `json:"organization_id"`
	}
	err := json.Unmarshal(doc, &u)
	return u.OrganizationID, err
}

// cachedUserEntry is CachedUser's read: the cache entry of a user that exists, else
// ErrNotFound.
func cachedUserEntry(ctx context.Context, c *cache.Cache, q Querier, id uuid.UUID, atLeast int) (cache.Entry, error) {
	key := c.Key("user", id.String())
	entry, err := c.Get(ctx, key)
	if err == nil && entry.Version < atLeast {
		if entry, err = UserEntry(ctx, q, id); err == nil {
			_ = c.Set(ctx, key, entry)
		}
		if err != nil {
			return cache.Entry{}, err
		}
	}
	if err != nil {
		load := func(ctx context.Context) (cache.Entry, error) { return UserEntry(ctx, q, id) }
		if errors.Is(err, cache.ErrMiss) {
			entry, err = c.Fill(ctx, key, load)
		} else {
			entry, err = load(ctx)
		}
		if err != nil {
			return cache.Entry{}, err
		}
	}
	if len(entry.Payload) == 0 {
		return cache.Entry{}, ErrNotFound
	}
	return entry, nil
}

// CustomRole is a custom role as the read model has it.
type CustomRole struct {
	Name        string
	Permissions []string
}

// CustomRoles returns the organization's live custom roles with the given names (all of
// them when names is nil), sorted by name.
func CustomRoles(ctx context.Context, q Querier, org uuid.UUID, names []string) ([]CustomRole, error) {
	rows, err := q.Query(ctx, `SELECT name, permissions FROM roles WHERE organization_id = $1 AND deleted_at IS NULL
		AND ($2::text[] IS NULL OR name = ANY($2)) ORDER BY name`, org, names)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (CustomRole, error) {
		var c CustomRole
		return c, r.Scan(&c.Name, &c.Permissions)
	})
}

// Responder is a chatbot's responder as the API shows it: never the webhook secret.
type Responder struct {
	Type      string `json:"type"`
	URL       string `json:"url,omitempty"`
	SecretSet bool   `json:"secret_set,omitempty"`
}

// Chatbot is the API's chatbot object.
type Chatbot struct {
	ID              uuid.UUID `json:"id"`
	OrganizationID  uuid.UUID `json:"organization_id"`
	Name            string    `json:"name"`
	Description     string    `json:"description"`
	WelcomeMessage  string    `json:"welcome_message"`
	FallbackMessage string    `json:"fallback_message"`
	Status          string    `json:"status"`
	Responder       Responder `json:"responder"`
	// Training is the read side's view of background training; command answers leave
	// it out. Null until training was first requested.
	Training  *Training `json:"training,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	Version   int       `json:"-"`
}

// Training is a chatbot's training progress.
type Training struct {
	Status    string     `json:"status"`
	TrainedAt *time.Time `json:"trained_at"`
	Entries   *int       `json:"entries"`
}

// ChatbotColumns are the columns ScanChatbot reads, in order.
const ChatbotColumns = `id, organization_id, name, description, welcome_message, fallback_message, status, responder,
	created_at, updated_at, version, training_status, trained_at, trained_entries`

// ScanChatbot reads a row selected with ChatbotColumns.
func ScanChatbot(row pgx.Row) (Chatbot, error) {
	var b Chatbot
	var responder []byte
	var status *string
	var t Training
	if err := row.Scan(&b.ID, &b.OrganizationID, &b.Name, &b.Description, &b.WelcomeMessage, &b.FallbackMessage,
		&b.Status, &responder, &b.CreatedAt, &b.UpdatedAt, &b.Version, &status, &t.TrainedAt, &t.Entries); err != nil {
		return b, err
	}
	if status != nil {
		t.Status = *status
		if t.TrainedAt != nil {
			*t.TrainedAt = t.TrainedAt.UTC()
		}
		b.Training = &t
	}
	b.CreatedAt, b.UpdatedAt = b.CreatedAt.UTC(), b.UpdatedAt.UTC()
	return b, json.Unmarshal(responder, &b.Responder)
}

// KnowledgeEntry is the API's knowledge entry object.
type KnowledgeEntry struct {
	ID        uuid.UUID `json:"id"`
	ChatbotID uuid.UUID `json:"chatbot_id"`
	Question  string    `json:"question"`
	Answer    string    `json:"answer"`
	Tags      []string  `json:"tags"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}
