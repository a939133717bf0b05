package readmodel

import (
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
