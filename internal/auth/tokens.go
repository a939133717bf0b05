package auth

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Key is one Ed25519 signing key.
type Key struct {
	ID      string
	Private ed25519.PrivateKey
}

// KeyFromSeed derives a key and its id (a hash of the public key) from a 32-byte seed.
func KeyFromSeed(seed []byte) Key {
	priv := ed25519.NewKeyFromSeed(seed)
	sum := sha256.Sum256(priv.Public().(ed25519.PublicKey))
	return Key{ID: hex.EncodeToString(sum[:8]), Private: priv}
}

// KeysFromConfig decodes base64 seeds; the first key signs.
func KeysFromConfig(seeds []string) ([]Key, error) {
	var keys []Key
	for i, s := range seeds {
		seed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
		if err != nil || len(seed) != ed25519.SeedSize {
			return nil, fmt.Errorf("signing key %d is not a base64 32-byte seed", i)
		}
		keys = append(keys, KeyFromSeed(seed))
	}
	return keys, nil
}

// LoadOrCreateKey returns the development key kept in the database, making it on first
// use. Production sets JWT_SIGNING_KEYS instead.
func LoadOrCreateKey(ctx context.Context, pool *pgxpool.Pool) (Key, error) {
	seed := make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		return Key{}, err
	}
	k := KeyFromSeed(seed)
	if _, err := pool.Exec(ctx, `INSERT INTO signing_keys (kid, seed)
		SELECT $1, $2 WHERE NOT EXISTS (SELECT 1 FROM signing_keys)`, k.ID, seed); err != nil {
		return Key{}, err
	}
	var stored []byte
	err := pool.QueryRow(ctx, `SELECT seed FROM signing_keys ORDER BY created_at, kid LIMIT 1`).Scan(&stored)
	if errors.Is(err, pgx.ErrNoRows) {
		return Key{}, errors.New("no signing key stored")
	}
	if err != nil {
		return Key{}, err
	}
	return KeyFromSeed(stored), nil
}

// Claims are an access token's claims.
type Claims struct {
	jwt.RegisteredClaims
	OrganizationID string `json:"org"`
	SessionID      string `json:"sid"`
}

// Tokens issues and verifies access tokens (EdDSA JWTs) and refresh tokens.
type Tokens struct {
	keys      []Key // keys[0] signs; all verify
	byID      map[string]ed25519.PublicKey
	issuer    string
	audience  string
	accessTTL time.Duration
	now       func() time.Time
}

// NewTokens returns a token service; keys must not be empty.
func NewTokens(keys []Key, issuer, audience string, accessTTL time.Duration) (*Tokens, error) {
	if len(keys) == 0 {
		return nil, errors.New("tokens: no signing key")
	}
	t := &Tokens{keys: keys, byID: map[string]ed25519.PublicKey{}, issuer: issuer, audience: audience,
		accessTTL: accessTTL, now: time.Now}
	for _, k := range keys {
		t.byID[k.ID] = k.Private.Public().(ed25519.PublicKey)
	}
	return t, nil
}

// AccessTTL is how long an access token lives.
func (t *Tokens) AccessTTL() time.Duration { return t.accessTTL }

// IssueAccess signs an access token for a user's session.
func (t *Tokens) IssueAccess(userID, orgID, sessionID uuid.UUID) (string, error) {
	now := t.now()
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    t.issuer,
			Subject:   userID.String(),
			Audience:  jwt.ClaimStrings{t.audience},
			ExpiresAt: jwt.NewNumericDate(now.Add(t.accessTTL)),
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now.Add(-5 * time.Second)),
			ID:        uuid.NewString(),
		},
		OrganizationID: orgID.String(),
		SessionID:      sessionID.String(),
	})
	tok.Header["kid"] = t.keys[0].ID
	return tok.SignedString(t.keys[0].Private)
}

// ErrInvalidToken is every reason a token is refused; the details are not for clients.
var ErrInvalidToken = errors.New("invalid token")

// VerifyAccess checks signature (EdDSA only, key by kid from the local set), issuer,
// audience and expiry, all required.
func (t *Tokens) VerifyAccess(raw string) (Claims, error) {
	var c Claims
	_, err := jwt.ParseWithClaims(raw, &c, func(tok *jwt.Token) (any, error) {
		kid, _ := tok.Header["kid"].(string)
		pub, ok := t.byID[kid]
		if !ok {
			return nil, fmt.Errorf("unknown kid %q", kid)
		}
		return pub, nil
	},
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithIssuer(t.issuer),
		jwt.WithAudience(t.audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(t.now),
	)
	if err != nil {
		return c, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	if _, err := uuid.Parse(c.Subject); err != nil {
		return c, fmt.Errorf("%w: bad subject", ErrInvalidToken)
	}
	return c, nil
}

// JWKS is the public key set that verifies access tokens.
func (t *Tokens) JWKS() map[string]any {
	keys := make([]map[string]string, 0, len(t.keys))
	for _, k := range t.keys {
		keys = append(keys, map[string]string{
			"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": k.ID,
			"x": base64.RawURLEncoding.EncodeToString(k.Private.Public().(ed25519.PublicKey)),
		})
	}
	return map[string]any{"keys": keys}
}

// Refresh tokens are "rt1.<kid>.<session id>.<generation>.<mac>", the MAC an HMAC-SHA256
// keyed by a secret derived from the signing key. Nothing about them is stored: the
// session's event stream knows the current generation, so an older one is a reuse.
const refreshPrefix = "rt1"

func (t *Tokens) refreshMAC(k Key, session uuid.UUID, generation int) string {
	secret := sha256.Sum256(append([]byte("chatbotd refresh token v1"), k.Private.Seed()...))
	m := hmac.New(sha256.New, secret[:])
	fmt.Fprintf(m, "%s.%d", session, generation)
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// IssueRefresh returns the refresh token of a session's generation.
func (t *Tokens) IssueRefresh(session uuid.UUID, generation int) string {
	k := t.keys[0]
	return fmt.Sprintf("%s.%s.%s.%d.%s", refreshPrefix, k.ID, session, generation, t.refreshMAC(k, session, generation))
}

// ParseRefresh verifies a refresh token and returns its session and generation.
func (t *Tokens) ParseRefresh(raw string) (uuid.UUID, int, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 5 || parts[0] != refreshPrefix {
		return uuid.Nil, 0, ErrInvalidToken
	}
	var key *Key
	for i := range t.keys {
		if t.keys[i].ID == parts[1] {
			key = &t.keys[i]
		}
	}
	session, err := uuid.Parse(parts[2])
	gen, gerr := strconv.Atoi(parts[3])
	if key == nil || err != nil || gerr != nil || gen < 1 {
		return uuid.Nil, 0, ErrInvalidToken
	}
	if !hmac.Equal([]byte(parts[4]), []byte(t.refreshMAC(*key, session, gen))) {
		return uuid.Nil, 0, ErrInvalidToken
	}
	return session, gen, nil
}
