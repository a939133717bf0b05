package readmodel

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDocumentOrganizationReadsItInPlace: the organization of a document userEntry
// wrote is read at its place, without decoding (no allocation); a document of another
// shape is decoded, and a broken one is an error.
func TestDocumentOrganizationReadsItInPlace(t *testing.T) {
	org := uuid.New()
	entry, err := userEntry(User{ID: uuid.New(), OrganizationID: org, Name: `Ann ","organization_id":"` + uuid.NewString(),
		Email: "ann@example.com", Status: "active", Roles: []string{"member"}, CreatedAt: time.Now(), UpdatedAt: time.Now(), Version: 3}, nil)
	require.NoError(t, err)
	got, err := documentOrganization(entry.Payload)
	require.NoError(t, err)
	assert.Equal(t, org, got)
	allocs := testing.AllocsPerRun(100, func() { _, _ = documentOrganization(entry.Payload) })
	assert.Zero(t, allocs, "the organization of userEntry's document is read in place, not decoded")

	other := uuid.New()
	for _, tc := range []struct {
		name string
		doc  string
		want uuid.UUID
		err  bool
	}{
		{"organization first", `{"organization_id":"` + org.String() + `","id":"` + other.String() + `"}`, org, false},
		{"id not a uuid", `{"id":"` + "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" + `","organization_id":"` + org.String() + `","name":"a"}`, org, false},
		{"the key inside a value", `{"name":"\",\"organization_id\":\"` + other.String() + `","organization_id":"` + org.String() + `"}`, org, false},
		{"cut short", `{"id":"` + other.String() + `","organization_id":"` + org.String()[:20], uuid.Nil, true},
		{"not JSON", `user`, uuid.Nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := documentOrganization([]byte(tc.doc))
			if tc.err {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

// TestUserDocumentIsEncodingJSONs: a user's cached document has the bytes encoding/json
// gives, whatever its strings hold and whatever its times' precision and zone.
func TestUserDocumentIsEncodingJSONs(t *testing.T) {
	at := time.Date(2026, 12, 7, 18, 0, 0, 123456000, time.UTC)
	for name, u := range map[string]User{
		"plain": {ID: uuid.New(), OrganizationID: uuid.New(), Name: "Ann", Email: "ann@example.com", Status: "active",
			Roles: []string{"member"}, CreatedAt: at, UpdatedAt: at, Version: 1},
		"odd strings": {ID: uuid.New(), OrganizationID: uuid.New(), Name: `Zoë "Q" <b>&amp;</b> ` + "\u2028\u2029\t\x01 日本語 😀",
			Email: `Mixed.Case+<tag>@Example.COM`, Status: "invited", Roles: []string{`a"b\c`, "NULL", "", "<&>"},
			CreatedAt: at.Add(-time.Hour), UpdatedAt: at, Version: 7},
		"invalid UTF-8": {ID: uuid.New(), Name: "a\xffb", Email: "\xfe", Roles: []string{"\xc3"}, CreatedAt: at, UpdatedAt: at},
		"no roles, whole seconds, another zone": {ID: uuid.New(), OrganizationID: uuid.New(), Roles: []string{},
			CreatedAt: time.Date(1999, 1, 2, 3, 4, 5, 0, time.FixedZone("x", -5*3600)), UpdatedAt: time.Unix(0, 0).UTC()},
		"nil roles, zero times": {},
	} {
		got, err := encodeUser(u)
		require.NoError(t, err, name)
		want, err := json.Marshal(u)
		require.NoError(t, err, name)
		assert.Equal(t, string(want), string(got), name)
	}
}
