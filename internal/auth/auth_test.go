package auth

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/rbac"
)

func newKey(t *testing.T) Key {
	seed := make([]byte, ed25519.SeedSize)
	_, err := rand.Read(seed)
	require.NoError(t, err)
	return KeyFromSeed(seed)
}

func TestHasher(t *testing.T) {
	h := NewHasher(2)
	ctx := context.Background()
	enc, err := h.Hash(ctx, "correct horse")
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(enc, "$argon2id$v=19$m=19456,t=2,p=1$"))
	ok, err := h.Verify(ctx, enc, "correct horse")
	require.NoError(t, err)
	assert.True(t, ok)
	ok, _ = h.Verify(ctx, enc, "wrong horse")
	assert.False(t, ok)
	ok, _ = h.Verify(ctx, "", "anything") // no user: the dummy hash never matches
	assert.False(t, ok)
	enc2, _ := h.Hash(ctx, "correct horse")
	assert.NotEqual(t, enc, enc2, "fresh salt")
}

func TestHasherBoundsConcurrency(t *testing.T) {
	h := NewHasher(1)
	h.slots <- struct{}{} // the only slot is taken
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := h.Hash(ctx, "password")
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestAccessTokens(t *testing.T) {
	key, other := newKey(t), newKey(t)
	tk, err := NewTokens([]Key{key}, "iss", "aud", 15*time.Minute)
	require.NoError(t, err)
	user, org, sess := uuid.New(), uuid.New(), uuid.New()
	raw, err := tk.IssueAccess(user, org, sess)
	require.NoError(t, err)
	c, err := tk.VerifyAccess(raw)
	require.NoError(t, err)
	assert.Equal(t, user.String(), c.Subject)
	assert.Equal(t, sess.String(), c.SessionID)

	sign := func(method jwt.SigningMethod, k any, claims jwt.MapClaims, kid string) string {
		tok := jwt.NewWithClaims(method, claims)
		if kid != "" {
			tok.Header["kid"] = kid
		}
		s, err := tok.SignedString(k)
		require.NoError(t, err)
		return s
	}
	valid := func() jwt.MapClaims {
		return jwt.MapClaims{"iss": "iss", "aud": "aud", "sub": user.String(), "org": org.String(), "sid": sess.String(),
			"exp": time.Now().Add(time.Minute).Unix(), "iat": time.Now().Unix()}
	}
	without := func(k string) jwt.MapClaims { c := valid(); delete(c, k); return c }
	with := func(k string, v any) jwt.MapClaims { c := valid(); c[k] = v; return c }
	pub := key.Private.Public().(ed25519.PublicKey)
	forged := map[string]string{
		"alg none":           sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, valid(), key.ID),
		"HS256 with pub key": sign(jwt.SigningMethodHS256, []byte(pub), valid(), key.ID),
		"expired":            sign(jwt.SigningMethodEdDSA, key.Private, with("exp", time.Now().Add(-time.Minute).Unix()), key.ID),
		"wrong issuer":       sign(jwt.SigningMethodEdDSA, key.Private, with("iss", "evil"), key.ID),
		"wrong audience":     sign(jwt.SigningMethodEdDSA, key.Private, with("aud", "other"), key.ID),
		"missing exp":        sign(jwt.SigningMethodEdDSA, key.Private, without("exp"), key.ID),
		"unknown kid":        sign(jwt.SigningMethodEdDSA, other.Private, valid(), other.ID),
		"no kid":             sign(jwt.SigningMethodEdDSA, key.Private, valid(), ""),
		"other key, our kid": sign(jwt.SigningMethodEdDSA, other.Private, valid(), key.ID),
		"tampered payload":   raw[:strings.Index(raw, ".")+1] + strings.Repeat("A", 10) + raw[strings.LastIndex(raw, "."):],
	}
	for name, tok := range forged {
		_, err := tk.VerifyAccess(tok)
		assert.ErrorIs(t, err, ErrInvalidToken, name)
	}

	// Rotation: a token of the previous key still verifies while it is in the set.
	rotated, err := NewTokens([]Key{other, key}, "iss", "aud", 15*time.Minute)
	require.NoError(t, err)
	_, err = rotated.VerifyAccess(raw)
	assert.NoError(t, err)
	assert.Len(t, rotated.JWKS()["keys"], 2)
}

func TestRefreshTokens(t *testing.T) {
	tk, err := NewTokens([]Key{newKey(t)}, "iss", "aud", time.Minute)
	require.NoError(t, err)
	sess := uuid.New()
	raw := tk.IssueRefresh(sess, 3)
	got, gen, err := tk.ParseRefresh(raw)
	require.NoError(t, err)
	assert.Equal(t, sess, got)
	assert.Equal(t, 3, gen)
	for _, bad := range []string{"", "rt1", strings.Replace(raw, ".3.", ".4.", 1), raw + "x", "rt2" + raw[3:]} {
		_, _, err := tk.ParseRefresh(bad)
		assert.Error(t, err, bad)
	}
	other, _ := NewTokens([]Key{newKey(t)}, "iss", "aud", time.Minute)
	_, _, err = other.ParseRefresh(raw)
	assert.Error(t, err, "another key set does not accept it")
}

func TestBuiltinRoles(t *testing.T) {
	roles := rbac.BuiltinRoles()
	assert.Len(t, roles[rbac.RoleOwner], len(rbac.Permissions()))
	assert.NotContains(t, roles[rbac.RoleAdmin], rbac.OrganizationWrite)
	assert.Len(t, roles[rbac.RoleAdmin], len(rbac.Permissions())-1)
	assert.ElementsMatch(t, []string{rbac.UsersRead, rbac.ChatbotsRead, rbac.ConversationsRead, rbac.AnalyticsRead}, roles[rbac.RoleViewer])
	assert.NotContains(t, roles[rbac.RoleMember], rbac.AuditRead)
	assert.Contains(t, roles[rbac.RoleMember], rbac.ChatbotsWrite)
}

func TestHasherGivesItsMemoryBackWhenIdle(t *testing.T) {
	h := newHasher(2, 20*time.Millisecond)
	held := func() uint64 {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapSys - m.HeapReleased // mapped heap the process keeps
	}
	time.Sleep(50 * time.Millisecond) // the start-up hash's give-back
	before := held()
	_, err := h.Hash(context.Background(), "correct horse")
	require.NoError(t, err)
	// 19 MiB were allocated and are garbage now; once hashing pauses they are returned.
	deadline := time.Now().Add(time.Second)
	for held() > before+8<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("still holding %d MiB more than before the hash", (held()-before)>>20)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestHasherRunsOneHashPerCoreByDefault(t *testing.T) {
	assert.Equal(t, runtime.GOMAXPROCS(0), cap(NewHasher(0).slots))
	assert.Equal(t, 3, cap(NewHasher(3).slots))
}
