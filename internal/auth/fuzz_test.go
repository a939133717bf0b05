package auth

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

func fuzzTokens(f *testing.F) *Tokens {
	f.Helper()
	tokens, err := NewTokens([]Key{KeyFromSeed(bytes.Repeat([]byte{7}, 32))}, "chatbotd", "chatbotd-api", 15*time.Minute)
	if err != nil {
		f.Fatal(err)
	}
	// One clock for every fuzzing process, so a seed made in one verifies in another.
	tokens.now = func() time.Time { return time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC) }
	return tokens
}

// FuzzBearerTokens: whatever a client sends as a bearer token (a JWT, a refresh token or
// an API token), parsing it never panics, and nothing but the tokens this service issued
// is accepted.
func FuzzBearerTokens(f *testing.F) {
	tokens := fuzzTokens(f)
	user := uuid.MustParse("0190a5b2-0000-7000-8000-00000000000a")
	org := uuid.MustParse("0190a5b2-0000-7000-8000-00000000000b")
	session := uuid.MustParse("0190a5b2-0000-7000-8000-00000000000c")
	access, err := tokens.IssueAccess(user, org, session)
	if err != nil {
		f.Fatal(err)
	}
	refresh := tokens.IssueRefresh(session, 3)
	apiToken, _ := NewAPIToken(user)
	for _, s := range []string{access, refresh, apiToken, "", ".", "....", "cbt_", "cbt_x_y", "Bearer " + access,
		strings.Replace(access, ".", "..", 1), access[:len(access)-2], "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
		"rt.k.x.1.y", refresh + "x", strings.ToUpper(apiToken)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		// Only what this service signed verifies: the claims of an accepted token are
		// those it issued (fuzzing cannot forge an Ed25519 signature).
		if c, err := tokens.VerifyAccess(raw); err == nil {
			if c.Subject != user.String() || c.OrganizationID != org.String() || c.SessionID != session.String() {
				t.Fatalf("accepted an access token this service did not issue: %q (%+v)", raw, c)
			}
		}
		if s, gen, err := tokens.ParseRefresh(raw); err == nil {
			if s != session || gen != 3 {
				t.Fatalf("refresh token %q parsed as %s/%d", raw, s, gen)
			}
		}
		if id, hash, ok := ParseAPIToken(raw); ok {
			if id == uuid.Nil || len(hash) != 32 {
				t.Fatalf("API token %q parsed as %s/%x", raw, id, hash)
			}
		}
	})
}
