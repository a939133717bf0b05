package auth

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/rbac"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// cacheLive reports whether a's cache is trusted now.
func (a *Authenticator) cacheLive() bool {
	if a.cache == nil {
		return false
	}
	a.cache.mu.Lock()
	defer a.cache.mu.Unlock()
	return a.cache.live
}

func liveCache(ttl time.Duration) *stateCache {
	c := newStateCache(ttl)
	c.setLive(true)
	return c
}

func TestStateCacheKeepsOnlyWhatNoInvalidationRacedWith(t *testing.T) {
	c := liveCache(time.Minute)
	now := time.Now()
	user, org := uuid.New(), uuid.New()
	k := cacheKey{id: uuid.New()}

	// A load that started before an invalidation is not kept.
	_, gen, ok := c.get(k, now)
	require.False(t, ok)
	c.forget(func(e cachedAuth) bool { return e.user == uuid.New() }) // anyone's
	c.put(k, cachedAuth{user: user, org: org, loaded: now}, gen)
	_, _, ok = c.get(k, now)
	assert.False(t, ok, "a load that raced with an invalidation must not be kept")

	// One that did not race is kept, until its user or organization is forgotten.
	_, gen, _ = c.get(k, now)
	c.put(k, cachedAuth{user: user, org: org, loaded: now}, gen)
	v, _, ok := c.get(k, now)
	require.True(t, ok)
	assert.Equal(t, user, v.user)
	c.apply("u:" + uuid.NewString())
	_, _, ok = c.get(k, now)
	assert.True(t, ok, "another user's change leaves it")
	c.apply("u:" + user.String())
	_, _, ok = c.get(k, now)
	assert.False(t, ok, "its user's change drops it")

	_, gen, _ = c.get(k, now)
	c.put(k, cachedAuth{user: user, org: org, loaded: now}, gen)
	c.apply("o:" + org.String())
	_, _, ok = c.get(k, now)
	assert.False(t, ok, "its organization's change drops it")

	_, gen, _ = c.get(k, now)
	c.put(k, cachedAuth{user: user, org: org, loaded: now}, gen)
	c.apply("something else")
	_, _, ok = c.get(k, now)
	assert.False(t, ok, "a payload it cannot read drops everything")

	// Entries expire after the TTL.
	_, gen, _ = c.get(k, now)
	c.put(k, cachedAuth{user: user, org: org, loaded: now}, gen)
	_, _, ok = c.get(k, now.Add(time.Minute))
	assert.False(t, ok, "expired")

	// Without its listener the cache is bypassed, and it starts empty when it is back.
	_, gen, _ = c.get(k, now)
	c.put(k, cachedAuth{user: user, org: org, loaded: now}, gen)
	c.setLive(false)
	_, gen, ok = c.get(k, now)
	assert.False(t, ok, "not trusted while not listening")
	c.put(k, cachedAuth{user: user, org: org, loaded: now}, gen)
	c.setLive(true)
	_, _, ok = c.get(k, now)
	assert.False(t, ok, "nothing from before the listener came back")

	// A nil cache (AUTH_CACHE_TTL=0) keeps nothing.
	var off *stateCache
	off.put(k, cachedAuth{}, 0)
	_, _, ok = off.get(k, now)
	assert.False(t, ok)
	assert.Nil(t, newStateCache(0))
}

func TestStateCacheIsBounded(t *testing.T) {
	c := liveCache(time.Minute)
	c.max = 10
	now := time.Now()
	for i := range 25 {
		k := cacheKey{id: uuid.New()}
		_, gen, _ := c.get(k, now)
		c.put(k, cachedAuth{loaded: now.Add(time.Duration(i) * time.Second)}, gen)
		assert.LessOrEqual(t, len(c.entries), c.max)
	}
}

// authFixture is one organization with an active member, a session and an API token,
// written as the commands write them.
type authFixture struct {
	tokens                      *Tokens
	org, user, session, tokenID uuid.UUID
	access, apiToken            string
}

func newAuthFixture(t *testing.T, d testenv.Database) authFixture {
	ctx := context.Background()
	key := newKey(t)
	tk, err := NewTokens([]Key{key}, "iss", "aud", 15*time.Minute)
	require.NoError(t, err)
	f := authFixture{tokens: tk, org: uuid.New(), user: uuid.New(), session: uuid.New(), tokenID: uuid.New()}
	f.access, err = tk.IssueAccess(f.user, f.org, f.session)
	require.NoError(t, err)
	var hash []byte
	f.apiToken, hash = NewAPIToken(f.tokenID)
	_, err = d.Pool.Exec(ctx, `
		WITH c AS (INSERT INTO user_credentials (user_id, organization_id, password_hash, active) VALUES ($1, $2, 'x', true)),
		s AS (INSERT INTO session_credentials (session_id, user_id, revoked) VALUES ($3, $1, false)),
		r AS (INSERT INTO role_assignments (organization_id, user_id, role, active) VALUES ($2, $1, 'member', true)),
		n AS (INSERT INTO role_names (organization_id, name, role_id, permissions) VALUES ($2, 'reporter', $6, '{analytics.read}'))
		INSERT INTO api_token_credentials (token_id, user_id, organization_id, secret_hash, abilities)
		VALUES ($4, $1, $2, $5, '{chatbots.read,analytics.read}')`,
		f.user, f.org, f.session, f.tokenID, hash, uuid.New())
	require.NoError(t, err)
	return f
}

func listening(t *testing.T, a *Authenticator) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = a.Listen(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	testenv.Eventually(t, 5*time.Second, func() error {
		if !a.cacheLive() {
			return errors.New("not listening yet")
		}
		return nil
	})
}

// quietly changes rows with the triggers off (as a replica would apply them), so that
// no process is told: what a process then answers shows whether it read its cache.
func quietly(t *testing.T, d testenv.Database, sql string, args ...any) {
	ctx := context.Background()
	tx, err := d.Pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx)
	_, err = tx.Exec(ctx, `SET LOCAL session_replication_role = replica`)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, sql, args...)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
}

func TestAuthenticationStateIsCachedAndInvalidatedInEveryProcess(t *testing.T) {
	d := testenv.MustDatabase(t)
	f := newAuthFixture(t, d)
	ctx := context.Background()
	// Two processes of one deployment: a and b.
	a := NewAuthenticator(f.tokens, d.Pool, time.Minute)
	b := NewAuthenticator(f.tokens, d.Pool, time.Minute)
	listening(t, a)
	listening(t, b)
	bearer := func(s string) string { return "Bearer " + s }
	accepted := func(x *Authenticator, cred string) error {
		_, err := x.Authenticate(ctx, bearer(cred))
		return err
	}
	refused := func(x *Authenticator, cred string) func() error {
		return func() error {
			if err := accepted(x, cred); apperr.CodeOf(err) != apperr.CodeUnauthenticated {
				return fmt.Errorf("want UNAUTHENTICATED, got %v", err)
			}
			return nil
		}
	}
	for _, x := range []*Authenticator{a, b} {
		require.NoError(t, accepted(x, f.access))
		require.NoError(t, accepted(x, f.apiToken))
	}

	// The cache answers: a change nobody is told of is not seen...
	quietly(t, d, `UPDATE session_credentials SET revoked = true WHERE session_id = $1`, f.session)
	require.NoError(t, accepted(a, f.access), "served from the cache")
	// ...until the process forgets the user itself (what a command does after its commit).
	a.ForgetUser(f.user)
	require.NoError(t, refused(a, f.access)())
	require.NoError(t, accepted(b, f.access), "b was not told")
	quietly(t, d, `UPDATE session_credentials SET revoked = false WHERE session_id = $1`, f.session)
	b.ForgetUser(f.user)
	a.ForgetUser(f.user)
	for _, x := range []*Authenticator{a, b} {
		require.NoError(t, accepted(x, f.access), "cached again")
	}

	// A committed change is announced to every process by the triggers.
	_, err := d.Pool.Exec(ctx, `UPDATE session_credentials SET revoked = true WHERE session_id = $1`, f.session)
	require.NoError(t, err)
	testenv.Eventually(t, 2*time.Second, refused(a, f.access))
	testenv.Eventually(t, 2*time.Second, refused(b, f.access))
	require.NoError(t, accepted(b, f.apiToken), "the user's token is untouched by a session's revocation")

	// The owner's role, through the token: member's chatbots:read goes with the role.
	p, err := b.Authenticate(ctx, bearer(f.apiToken))
	require.NoError(t, err)
	assert.Contains(t, p.Permissions, rbac.ChatbotsRead)
	_, err = d.Pool.Exec(ctx, `UPDATE role_assignments SET role = 'reporter' WHERE user_id = $1`, f.user)
	require.NoError(t, err)
	tokenCan := func(want func(Principal) bool) func() error {
		return func() error {
			p, err := b.Authenticate(ctx, bearer(f.apiToken))
			if err == nil && !want(p) {
				err = fmt.Errorf("permissions %v", p.Permissions)
			}
			return err
		}
	}
	testenv.Eventually(t, 2*time.Second, tokenCan(func(p Principal) bool { return !p.Can(rbac.ChatbotsRead) && p.Can(rbac.AnalyticsRead) }))
	// A custom role's permissions change for its whole organization.
	_, err = d.Pool.Exec(ctx, `UPDATE role_names SET permissions = '{}' WHERE organization_id = $1`, f.org)
	require.NoError(t, err)
	testenv.Eventually(t, 2*time.Second, tokenCan(func(p Principal) bool { return len(p.Permissions) == 0 }))
	// Suspension, then revocation of the token.
	_, err = d.Pool.Exec(ctx, `INSERT INTO organization_states (organization_id, suspended) VALUES ($1, true)`, f.org)
	require.NoError(t, err)
	testenv.Eventually(t, 2*time.Second, func() error {
		if err := accepted(a, f.apiToken); apperr.CodeOf(err) != apperr.CodeOrgSuspended {
			return fmt.Errorf("want ORGANIZATION_SUSPENDED, got %v", err)
		}
		return nil
	})
	_, err = d.Pool.Exec(ctx, `DELETE FROM api_token_credentials WHERE token_id = $1`, f.tokenID)
	require.NoError(t, err)
	testenv.Eventually(t, 2*time.Second, refused(a, f.apiToken))
	testenv.Eventually(t, 2*time.Second, refused(b, f.apiToken))
}

func TestAuthenticationCacheIsOffWithoutItsListener(t *testing.T) {
	d := testenv.MustDatabase(t)
	f := newAuthFixture(t, d)
	ctx := context.Background()
	a := NewAuthenticator(f.tokens, d.Pool, time.Minute)
	listening(t, a)
	_, err := a.Authenticate(ctx, "Bearer "+f.access)
	require.NoError(t, err)

	// The listener's connection dies: the cache must not be trusted while nobody hears
	// the notifications.
	_, err = d.Pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND query LIKE 'LISTEN%'`)
	require.NoError(t, err)
	testenv.Eventually(t, 5*time.Second, func() error {
		if a.cacheLive() {
			return errors.New("still trusted")
		}
		return nil
	})
	quietly(t, d, `UPDATE user_credentials SET active = false WHERE user_id = $1`, f.user)
	_, err = a.Authenticate(ctx, "Bearer "+f.access)
	assert.Equal(t, apperr.CodeUnauthenticated, apperr.CodeOf(err), "read from the database while the cache is off")

	// It listens again, and starts empty.
	testenv.Eventually(t, 5*time.Second, func() error {
		if !a.cacheLive() {
			return errors.New("not listening again")
		}
		return nil
	})
	_, err = a.Authenticate(ctx, "Bearer "+f.access)
	assert.Equal(t, apperr.CodeUnauthenticated, apperr.CodeOf(err))

	// AUTH_CACHE_TTL=0: every request reads the database.
	off := NewAuthenticator(f.tokens, d.Pool, 0)
	require.NoError(t, off.Listen(ctx), "nothing to listen for")
	quietly(t, d, `UPDATE user_credentials SET active = true WHERE user_id = $1`, f.user)
	_, err = off.Authenticate(ctx, "Bearer "+f.access)
	require.NoError(t, err)
	quietly(t, d, `UPDATE user_credentials SET active = false WHERE user_id = $1`, f.user)
	_, err = off.Authenticate(ctx, "Bearer "+f.access)
	assert.Equal(t, apperr.CodeUnauthenticated, apperr.CodeOf(err))
}
