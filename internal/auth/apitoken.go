package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"strings"

	"github.com/google/uuid"
)

// APITokenPrefix starts every API token, so that a leaked one is recognisable (secret
// scanners) and is told apart from a JWT without parsing it.
const APITokenPrefix = "cbt_"

// NewAPIToken returns a token's plaintext ("cbt_<id>_<secret>", shown once) and the hash
// of its secret (the only thing stored).
func NewAPIToken(id uuid.UUID) (plaintext string, hash []byte) {
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	s := base64.RawURLEncoding.EncodeToString(secret)
	sum := sha256.Sum256([]byte(s))
	return APITokenPrefix + strings.ReplaceAll(id.String(), "-", "") + "_" + s, sum[:]
}

// ParseAPIToken splits a plaintext token into its id and the hash of its secret. A
// 256-bit random secret needs no slow hash: SHA-256 is enough to make the stored value
// useless to a thief.
func ParseAPIToken(raw string) (uuid.UUID, []byte, bool) {
	rest, ok := strings.CutPrefix(raw, APITokenPrefix)
	if !ok {
		return uuid.Nil, nil, false
	}
	idHex, secret, ok := strings.Cut(rest, "_")
	if !ok || len(secret) != 43 {
		return uuid.Nil, nil, false
	}
	id, err := uuid.Parse(idHex)
	if err != nil || id == uuid.Nil {
		return uuid.Nil, nil, false
	}
	// A secret is 32 random bytes in unpadded base64url (found by FuzzBearerTokens: the
	// shape alone let anything of 43 characters through to the lookup).
	if _, err := base64.RawURLEncoding.Strict().DecodeString(secret); err != nil {
		return uuid.Nil, nil, false
	}
	sum := sha256.Sum256([]byte(secret))
	return id, sum[:], true
}
