package domain

import (
	"regexp"
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
)

// Organization is the organization aggregate's state.
type Organization struct {
	Exists           bool
	Name             string
	Slug             string
	Status           string
	Platform         bool
	SuspensionReason *string
}

// EvolveOrganization applies one event.
func EvolveOrganization(o Organization, e events.Event) Organization {
	switch e := e.(type) {
	case events.OrganizationCreated:
		o = Organization{Exists: true, Name: e.Name, Slug: e.Slug, Status: e.Status, Platform: e.Platform}
	case events.OrganizationSuspended:
		o.Status, o.SuspensionReason = OrganizationSuspendedStatus, &e.Reason
	case events.OrganizationResumed:
		o.Status, o.SuspensionReason = "active", nil
	case events.OrganizationUpdated:
		if c, ok := e.Changes["name"]; ok {
			o.Name = c.New
		}
		if c, ok := e.Changes["slug"]; ok {
			o.Slug = c.New
		}
	}
	return o
}

// CreateOrganization is part of registering.
type CreateOrganization struct {
	Name string
	Slug string
}

// DecideCreateOrganization creates an organization that does not exist yet.
func DecideCreateOrganization(o Organization, c CreateOrganization) ([]events.Event, error) {
	if o.Exists {
		return nil, apperr.Conflict("the organization exists already")
	}
	return []events.Event{events.OrganizationCreated{Name: c.Name, Slug: c.Slug, Status: "active"}}, nil
}

// UpdateOrganization changes the name or slug; nil fields stay.
type UpdateOrganization struct {
	Name *string `json:"name"`
	Slug *string `json:"slug"`
}

// Validate checks the fields that are set.
func (c *UpdateOrganization) Validate() error {
	f := apperr.Fields{}
	if c.Name != nil {
		*c.Name = strings.TrimSpace(*c.Name)
		checkName(f, "name", *c.Name)
	}
	if c.Slug != nil {
		*c.Slug = strings.TrimSpace(*c.Slug)
		if !slugPattern.MatchString(*c.Slug) {
			f.Add("slug", "must be 3 to 63 lowercase letters, digits and single hyphens")
		}
	}
	return f.Err()
}

// DecideUpdateOrganization records the fields that really change (none: no event).
func DecideUpdateOrganization(o Organization, c UpdateOrganization) ([]events.Event, error) {
	if !o.Exists {
		return nil, apperr.NotFound("organization")
	}
	changes := map[string]events.Change{}
	if c.Name != nil && *c.Name != o.Name {
		changes["name"] = events.Change{Old: o.Name, New: *c.Name}
	}
	if c.Slug != nil && *c.Slug != o.Slug {
		changes["slug"] = events.Change{Old: o.Slug, New: *c.Slug}
	}
	if len(changes) == 0 {
		return nil, nil
	}
	return []events.Event{events.OrganizationUpdated{Changes: changes}}, nil
}

var slugPattern = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9]|-[a-z0-9]){2,62}$`)

// Slugify makes a slug from a name: lowercase ASCII letters and digits joined by single
// hyphens, at least 3 characters ("org" padding when the name has too few).
func Slugify(name string) string {
	var b strings.Builder
	hyphen := false
	for _, r := range norm.NFKD.String(strings.ToLower(name)) {
		switch {
		case r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r)):
			b.WriteRune(r)
			hyphen = false
		case unicode.Is(unicode.Mn, r): // accents fall away: é → e
		default:
			if b.Len() > 0 && !hyphen {
				b.WriteByte('-')
				hyphen = true
			}
		}
	}
	s := strings.Trim(b.String(), "-")
	if len(s) > 50 {
		s = strings.Trim(s[:50], "-")
	}
	if !slugPattern.MatchString(s) {
		s = strings.Trim("org-"+s, "-")
	}
	return s
}
