package readmodel_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/cache"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// TestCachedUserIsNeverOlderThanTheAwaitedVersion: the projector has committed version 2
// but not yet written the cache (it does so after its commit); a reader whose consistency
// token awaited version 2 gets version 2, and the cache is brought up to date.
func TestCachedUserIsNeverOlderThanTheAwaitedVersion(t *testing.T) {
	d := testenv.MustDatabase(t)
	r := testenv.MustRedis(t)
	c := cache.New(r.Client, r.Prefix, time.Minute)
	ctx := context.Background()
	id, org := uuid.New(), uuid.New()
	now := time.Now().UTC()
	_, err := d.Pool.Exec(ctx, `INSERT INTO users (id, organization_id, name, email, status, roles, version, created_at, updated_at)
		VALUES ($1, $2, 'New Name', 'n@example.com', 'active', '{member}', 2, $3, $3)`, id, org, now)
	require.NoError(t, err)
	old, err := json.Marshal(readmodel.User{ID: id, OrganizationID: org, Name: "Old Name", Email: "n@example.com", Status: "active"})
	require.NoError(t, err)
	require.NoError(t, c.Set(ctx, c.Key("user", id.String()), cache.Entry{Version: 1, Payload: old}))

	u, err := readmodel.CachedUser(ctx, c, d.Pool, id, 0)
	require.NoError(t, err)
	assert.Equal(t, "Old Name", u.Name, "without a token the cache answers")

	u, err = readmodel.CachedUser(ctx, c, d.Pool, id, 2)
	require.NoError(t, err)
	assert.Equal(t, "New Name", u.Name)
	assert.Equal(t, 2, u.Version)

	u, err = readmodel.CachedUser(ctx, c, d.Pool, id, 0)
	require.NoError(t, err)
	assert.Equal(t, "New Name", u.Name, "the cache was brought up to date")
}

// TestUserEntriesReadsManyUsersAsUserEntryDoes: a batch's cache entries come from one
// query and are exactly what UserEntry gives for each user, deleted and missing ones
// included (tombstones).
func TestUserEntriesReadsManyUsersAsUserEntryDoes(t *testing.T) {
	d := testenv.MustDatabase(t)
	ctx := context.Background()
	live, deleted, missing, org := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	now := time.Now().UTC()
	_, err := d.Pool.Exec(ctx, `INSERT INTO users (id, organization_id, name, email, status, roles, version, created_at, updated_at, deleted_at)
		VALUES ($1, $3, 'Live', 'l@example.com', 'active', '{member}', 2, $4, $4, NULL),
		       ($2, $3, 'Gone', 'g@example.com', 'active', '{member}', 3, $4, $4, $4)`, live, deleted, org, now)
	require.NoError(t, err)

	got, err := readmodel.UserEntries(ctx, d.Pool, []uuid.UUID{live, deleted, missing})
	require.NoError(t, err)
	require.Len(t, got, 3)
	for _, id := range []uuid.UUID{live, deleted, missing} {
		want, err := readmodel.UserEntry(ctx, d.Pool, id)
		require.NoError(t, err)
		assert.Equal(t, want, got[id], id)
	}
	assert.Equal(t, 2, got[live].Version)
	assert.Contains(t, string(got[live].Payload), `"name":"Live"`)
	assert.Equal(t, cache.Entry{Version: 3}, got[deleted])
	assert.Equal(t, cache.Entry{}, got[missing])
}

// TestCachedUserDocumentIsTheUserAsCachedUserEncodesIt: the document answered as it is
// is byte for byte what encoding the decoded user gives, with its organization and
// version; a deleted user is not found, as with CachedUser.
func TestCachedUserDocumentIsTheUserAsCachedUserEncodesIt(t *testing.T) {
	d := testenv.MustDatabase(t)
	r := testenv.MustRedis(t)
	c := cache.New(r.Client, r.Prefix, time.Minute)
	ctx := context.Background()
	live, deleted, org := uuid.New(), uuid.New(), uuid.New()
	now := time.Now().UTC()
	_, err := d.Pool.Exec(ctx, `INSERT INTO users (id, organization_id, name, email, status, roles, version, created_at, updated_at, deleted_at)
		VALUES ($1, $3, 'Live "quoted" <name>', 'l@example.com', 'active', '{admin,member}', 4, $4, $4, NULL),
		       ($2, $3, 'Gone', 'g@example.com', 'active', '{member}', 3, $4, $4, $4)`, live, deleted, org, now)
	require.NoError(t, err)

	for _, fromCache := range []bool{false, true} { // a miss filled from the read model, then a hit
		doc, err := readmodel.CachedUserDocument(ctx, c, d.Pool, live, 0)
		require.NoError(t, err, "from the cache: %v", fromCache)
		u, err := readmodel.CachedUser(ctx, c, d.Pool, live, 0)
		require.NoError(t, err)
		want, err := json.Marshal(u)
		require.NoError(t, err)
		assert.Equal(t, string(want), string(doc.JSON))
		assert.Equal(t, org, doc.OrganizationID)
		assert.Equal(t, 4, doc.Version)
	}
	_, err = readmodel.CachedUserDocument(ctx, c, d.Pool, deleted, 0)
	assert.ErrorIs(t, err, readmodel.ErrNotFound)
	_, err = readmodel.CachedUserDocument(ctx, c, d.Pool, uuid.New(), 0)
	assert.ErrorIs(t, err, readmodel.ErrNotFound)
}
