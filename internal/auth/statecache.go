package auth

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/chatbotsaas/chatbotd/internal/db"
)

// AuthChangedChannel is the LISTEN/NOTIFY channel on which the triggers of migration
// 00016 name, at commit, the user ('u:<id>') or the organization ('o:<id>') whose
// authentication state changed.
const AuthChangedChannel = "auth_changed"

// stateCache keeps what authentication reads from the primary database (a session's or
// an API token's state and its owner's) in process memory, so that a request costs no
// query. It stays exact because it is invalidated from the transactions that change
// that state:
//
//   - triggers on the write-side tables NOTIFY AuthChangedChannel at commit, and every
//     process listens (Listen), so another process forgets within PostgreSQL's delivery
//     time (well under a millisecond on one host);
//   - the process that ran the command forgets the user or organization itself after
//     the commit and before it answers (ForgetUser, ForgetOrganization), so the very
//     next request it serves reads the new state;
//   - a load that raced with an invalidation is not kept: each invalidation moves a
//     generation on, and a load is stored only if the generation it started under is
//     still current;
//   - entries are trusted only while the listener is connected: when it drops, the
//     cache is emptied and bypassed until it listens again, since notifications sent
//     meanwhile are lost;
//   - an entry lives at most ttl, a bound on anything not foreseen here.
//
// The map is hand-written rather than a cache library's: the invalidation by user and
// organization and the generation check are the whole point, and they need the lock
// that guards the entries.
type stateCache struct {
	ttl time.Duration
	max int

	mu      sync.Mutex
	live    bool
	gen     uint64
	entries map[cacheKey]cachedAuth
}

type cacheKey struct {
	token bool      // an API token (id is the token's) or a session (id is the session's)
	id    uuid.UUID // session or token id
}

// cachedAuth is one loaded state: a session's (state) or an API token's (token).
type cachedAuth struct {
	user   uuid.UUID
	org    uuid.UUID
	state  authState
	token  *tokenState
	loaded time.Time
}

const maxCachedStates = 50000

func newStateCache(ttl time.Duration) *stateCache {
	if ttl <= 0 {
		return nil
	}
	return &stateCache{ttl: ttl, max: maxCachedStates, entries: map[cacheKey]cachedAuth{}}
}

// get returns the entry for k if it may be trusted, and the generation a load of k must
// be stored under.
func (c *stateCache) get(k cacheKey, now time.Time) (cachedAuth, uint64, bool) {
	if c == nil {
		return cachedAuth{}, 0, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.entries[k]
	if !c.live || !ok || now.Sub(v.loaded) >= c.ttl {
		return cachedAuth{}, c.gen, false
	}
	return v, c.gen, true
}

// put keeps a load made under generation gen, unless something was invalidated since.
func (c *stateCache) put(k cacheKey, v cachedAuth, gen uint64) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.live || gen != c.gen {
		return
	}
	if len(c.entries) >= c.max {
		for k, e := range c.entries {
			if v.loaded.Sub(e.loaded) >= c.ttl {
				delete(c.entries, k)
			}
		}
		if len(c.entries) >= c.max {
			clear(c.entries) // bounded and rare: one query per active credential to refill
		}
	}
	c.entries[k] = v
}

// forget drops the entries that match and moves the generation on, so that loads in
// flight are not kept either.
func (c *stateCache) forget(match func(cachedAuth) bool) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for k, e := range c.entries {
		if match == nil || match(e) {
			delete(c.entries, k)
		}
	}
}

func (c *stateCache) setLive(live bool) {
	if c == nil {
		return
	}
	c.forget(nil)
	c.mu.Lock()
	c.live = live
	c.mu.Unlock()
}

// apply carries out one notification of AuthChangedChannel.
func (c *stateCache) apply(payload string) {
	kind, id, _ := strings.Cut(payload, ":")
	u, err := uuid.Parse(id)
	switch {
	case err == nil && kind == "u":
		c.forget(func(e cachedAuth) bool { return e.user == u })
	case err == nil && kind == "o":
		c.forget(func(e cachedAuth) bool { return e.org == u })
	default:
		c.forget(nil) // not ours to read: forget everything rather than guess
	}
}

// ForgetUser drops what this process remembers of a user's authentication state. Commands
// that change it call it after their commit (other processes learn it from the NOTIFY).
func (a *Authenticator) ForgetUser(id uuid.UUID) {
	a.cache.forget(func(e cachedAuth) bool { return e.user == id })
}

// ForgetOrganization drops what this process remembers of an organization's members.
func (a *Authenticator) ForgetOrganization(id uuid.UUID) {
	a.cache.forget(func(e cachedAuth) bool { return e.org == id })
}

// Listen keeps the cache's LISTEN connection (its own, outside the pool) until ctx ends.
// Until it listens, and whenever the connection is lost, the cache is bypassed and every
// request reads the database.
func (a *Authenticator) Listen(ctx context.Context) error {
	if a.cache == nil {
		return nil
	}
	db.KeepListening(ctx, a.creds.Config().ConnConfig, AuthChangedChannel, func(live bool) {
		a.cache.setLive(live)
		if live && a.Logger != nil {
			a.Logger.Debug("authentication cache on")
		}
	}, a.cache.apply, func(err error) {
		if a.Logger != nil {
			a.Logger.Warn("authentication cache off: its LISTEN connection failed", "error", err)
		}
	})
	return nil
}
