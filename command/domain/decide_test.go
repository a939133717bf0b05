package domain

import (
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/auth"
	"github.com/chatbotsaas/chatbotd/internal/rbac"
)

func ptr[T any](v T) *T { return &v }

func given[S any](evolve func(S, events.Event) S, evs ...events.Event) S {
	var s S
	for _, e := range evs {
		s = evolve(s, e)
	}
	return s
}

var (
	created = events.UserCreated{Name: "Ann", Email: "ann@example.com", Roles: []string{"member"}, Status: StatusActive}
	self    = uuid.MustParse("00000000-0000-0000-0000-000000000001")
	other   = uuid.MustParse("00000000-0000-0000-0000-000000000002")
)

func TestDecideUser(t *testing.T) {
	tests := []struct {
		name    string
		history []events.Event
		decide  func(User) ([]events.Event, error)
		want    []events.Event
		code    apperr.Code
	}{
		{"create new", nil, func(u User) ([]events.Event, error) {
			return DecideCreateUser(u, CreateUser{Name: "Ann", Email: "ann@example.com", Role: "member"})
		}, []events.Event{created}, ""},
		{"create existing", []events.Event{created}, func(u User) ([]events.Event, error) {
			return DecideCreateUser(u, CreateUser{Name: "Ann", Email: "ann@example.com", Role: "member"})
		}, nil, apperr.CodeConflict},
		{"rename", []events.Event{created}, func(u User) ([]events.Event, error) {
			return DecideUpdateUser(other, u, UpdateUser{Name: ptr("Anna"), Actor: self})
		}, []events.Event{events.UserUpdated{Changes: map[string]events.Change{"name": {Old: "Ann", New: "Anna"}}}}, ""},
		{"update with no change", []events.Event{created}, func(u User) ([]events.Event, error) {
			return DecideUpdateUser(other, u, UpdateUser{Name: ptr("Ann"), Email: ptr("ann@example.com"), Status: ptr(StatusActive), Actor: self})
		}, nil, ""},
		{"deactivate", []events.Event{created}, func(u User) ([]events.Event, error) {
			return DecideUpdateUser(other, u, UpdateUser{Status: ptr(StatusDeactivated), Actor: self})
		}, []events.Event{events.UserDeactivated{}}, ""},
		{"deactivate yourself", []events.Event{created}, func(u User) ([]events.Event, error) {
			return DecideUpdateUser(self, u, UpdateUser{Status: ptr(StatusDeactivated), Actor: self})
		}, nil, apperr.CodeValidation},
		{"reactivate", []events.Event{created, events.UserDeactivated{}}, func(u User) ([]events.Event, error) {
			return DecideUpdateUser(other, u, UpdateUser{Status: ptr(StatusActive), Actor: self})
		}, []events.Event{events.UserReactivated{}}, ""},
		{"update deleted", []events.Event{created, events.UserDeleted{}}, func(u User) ([]events.Event, error) {
			return DecideUpdateUser(other, u, UpdateUser{Name: ptr("x"), Actor: self})
		}, nil, apperr.CodeNotFound},
		{"update missing", nil, func(u User) ([]events.Event, error) {
			return DecideUpdateUser(other, u, UpdateUser{Name: ptr("x"), Actor: self})
		}, nil, apperr.CodeNotFound},
		{"delete", []events.Event{created}, func(u User) ([]events.Event, error) { return DecideDeleteUser(other, u, self) },
			[]events.Event{events.UserDeleted{}}, ""},
		{"delete yourself", []events.Event{created}, func(u User) ([]events.Event, error) { return DecideDeleteUser(self, u, self) },
			nil, apperr.CodeForbidden},
		{"delete twice", []events.Event{created, events.UserDeleted{}}, func(u User) ([]events.Event, error) { return DecideDeleteUser(other, u, self) },
			nil, apperr.CodeNotFound},
		{"assign role", []events.Event{created}, func(u User) ([]events.Event, error) { return DecideAssignRole(u, "admin", true) },
			[]events.Event{events.UserRoleAssigned{Role: "admin"}}, ""},
		{"assign held role", []events.Event{created}, func(u User) ([]events.Event, error) { return DecideAssignRole(u, "member", true) },
			nil, ""},
		{"assign unknown role", []events.Event{created}, func(u User) ([]events.Event, error) { return DecideAssignRole(u, "wizard", false) },
			nil, apperr.CodeNotFound},
		{"remove role", []events.Event{created}, func(u User) ([]events.Event, error) { return DecideRemoveRole(u, "member") },
			[]events.Event{events.UserRoleRemoved{Role: "member"}}, ""},
		{"remove role not held", []events.Event{created}, func(u User) ([]events.Event, error) { return DecideRemoveRole(u, "admin") },
			nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.decide(given(EvolveUser, tt.history...))
			assert.Equal(t, tt.code, apperr.CodeOf(err), "error %v", err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestEvolveUser(t *testing.T) {
	u := given(EvolveUser, created,
		events.UserUpdated{Changes: map[string]events.Change{"email": {Old: "ann@example.com", New: "a@example.com"}}},
		events.UserRoleAssigned{Role: "admin"}, events.UserRoleAssigned{Role: "admin"}, events.UserRoleRemoved{Role: "member"},
		events.UserDeactivated{})
	assert.Equal(t, User{Exists: true, Name: "Ann", Email: "a@example.com", Status: StatusDeactivated, Roles: []string{"admin"}}, u)
	assert.False(t, given(EvolveUser, created, events.UserDeleted{}).Live())
}

func TestDecideSession(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	later := now.Add(time.Hour)
	started := events.SessionStarted{UserID: self.String(), ExpiresAt: later.Format(time.RFC3339)}
	refreshed := events.SessionRefreshed{Generation: 2, ExpiresAt: later.Format(time.RFC3339)}
	tests := []struct {
		name      string
		history   []events.Event
		presented int
		at        time.Time
		want      []events.Event
		refused   bool
	}{
		{"current generation rotates", []events.Event{started}, 1, now, []events.Event{events.SessionRefreshed{Generation: 2, ExpiresAt: later.Add(time.Hour).Format(time.RFC3339)}}, false},
		{"older generation is reuse and revokes", []events.Event{started, refreshed}, 1, now,
			[]events.Event{events.SessionReuseDetected{PresentedGeneration: 1, CurrentGeneration: 2}, events.SessionRevoked{Reason: ReasonReuse}}, true},
		{"future generation is refused", []events.Event{started}, 5, now, nil, true},
		{"revoked session is refused", []events.Event{started, events.SessionRevoked{Reason: ReasonLogout}}, 1, now, nil, true},
		{"expired session is refused", []events.Event{started}, 1, later.Add(time.Minute), nil, true},
		{"unknown session is refused", nil, 1, now, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecideRefreshSession(given(EvolveSession, tt.history...), tt.presented, tt.at, later.Add(time.Hour))
			assert.Equal(t, tt.refused, err != nil)
			if err != nil {
				assert.Equal(t, apperr.CodeUnauthenticated, apperr.CodeOf(err))
			}
			assert.Equal(t, tt.want, got)
		})
	}
	s := given(EvolveSession, started)
	evs, err := DecideRevokeSession(s, ReasonLogout)
	assert.NoError(t, err)
	assert.Equal(t, []events.Event{events.SessionRevoked{Reason: ReasonLogout}}, evs)
	evs, err = DecideRevokeSession(EvolveSession(s, evs[0]), ReasonLogout)
	assert.NoError(t, err)
	assert.Empty(t, evs, "revoking twice changes nothing")
	_, err = DecideStartSession(s, self, later)
	assert.Equal(t, apperr.CodeConflict, apperr.CodeOf(err))
}

func TestDecideOrganization(t *testing.T) {
	createdOrg := events.OrganizationCreated{Name: "Acme", Slug: "acme", Status: "active"}
	tests := []struct {
		name    string
		history []events.Event
		cmd     UpdateOrganization
		want    []events.Event
		code    apperr.Code
	}{
		{"rename", []events.Event{createdOrg}, UpdateOrganization{Name: ptr("Acme Ltd")},
			[]events.Event{events.OrganizationUpdated{Changes: map[string]events.Change{"name": {Old: "Acme", New: "Acme Ltd"}}}}, ""},
		{"no change", []events.Event{createdOrg}, UpdateOrganization{Name: ptr("Acme"), Slug: ptr("acme")}, nil, ""},
		{"missing", nil, UpdateOrganization{Name: ptr("x")}, nil, apperr.CodeNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecideUpdateOrganization(given(EvolveOrganization, tt.history...), tt.cmd)
			assert.Equal(t, tt.code, apperr.CodeOf(err))
			assert.Equal(t, tt.want, got)
		})
	}
	_, err := DecideCreateOrganization(given(EvolveOrganization, createdOrg), CreateOrganization{Name: "x", Slug: "xyz"})
	assert.Equal(t, apperr.CodeConflict, apperr.CodeOf(err))
}

func TestDecideSuspension(t *testing.T) {
	created := events.OrganizationCreated{Name: "Acme", Slug: "acme", Status: "active"}
	platform := events.OrganizationCreated{Name: PlatformOrganizationName, Slug: "platform", Status: "active", Platform: true}
	suspended := events.OrganizationSuspended{Reason: "unpaid"}
	tests := []struct {
		name    string
		history []events.Event
		suspend bool
		want    []events.Event
		code    apperr.Code
	}{
		{"suspend an active one", []events.Event{created}, true, []events.Event{events.OrganizationSuspended{Reason: "why"}}, ""},
		{"suspend again: nothing", []events.Event{created, suspended}, true, nil, ""},
		{"resume a suspended one", []events.Event{created, suspended}, false, []events.Event{events.OrganizationResumed{}}, ""},
		{"resume an active one: nothing", []events.Event{created, suspended, events.OrganizationResumed{}}, false, nil, ""},
		{"the platform's own: refused", []events.Event{platform}, true, nil, apperr.CodeConflict},
		{"missing", nil, true, nil, apperr.CodeNotFound},
		{"missing, resume", nil, false, nil, apperr.CodeNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := given(EvolveOrganization, tt.history...)
			var got []events.Event
			var err error
			if tt.suspend {
				got, err = DecideSuspendOrganization(o, "why")
			} else {
				got, err = DecideResumeOrganization(o)
			}
			assert.Equal(t, tt.code, apperr.CodeOf(err))
			assert.Equal(t, tt.want, got)
		})
	}
	o := given(EvolveOrganization, created, suspended)
	assert.Equal(t, OrganizationSuspendedStatus, o.Status)
	assert.Equal(t, "unpaid", *o.SuspensionReason)
	o = given(EvolveOrganization, created, suspended, events.OrganizationResumed{})
	assert.Equal(t, "active", o.Status)
	assert.Nil(t, o.SuspensionReason)

	long := SuspendOrganization{Reason: strings.Repeat("x", 501)}
	assert.Equal(t, apperr.CodeValidation, apperr.CodeOf(long.Validate()))
	blank := SuspendOrganization{Reason: "  "}
	assert.Equal(t, apperr.CodeValidation, apperr.CodeOf(blank.Validate()))
}

func TestValidation(t *testing.T) {
	tests := []struct {
		name   string
		in     CreateUser
		fields []string
	}{
		{"valid, role defaults to member", CreateUser{Name: " Ann ", Email: " Ann@Example.COM ", Password: "12345678", PasswordConfirmation: "12345678"}, nil},
		{"everything wrong", CreateUser{Email: "not-an-email", Password: "short", PasswordConfirmation: "other", Role: "Root!"},
			[]string{"email", "name", "password", "password_confirmation", "role"}},
		{"display-name email is refused", CreateUser{Name: "A", Email: "Ann <ann@example.com>", Password: "12345678", PasswordConfirmation: "12345678"}, []string{"email"}},
		{"email without a dot in the domain", CreateUser{Name: "A", Email: "ann@localhost", Password: "12345678", PasswordConfirmation: "12345678"}, []string{"email"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.in
			err := in.Validate()
			var fields []string
			if e, ok := err.(*apperr.Error); ok {
				for f := range e.Fields {
					fields = append(fields, f)
				}
			}
			assert.ElementsMatch(t, tt.fields, fields)
			if err == nil {
				assert.Equal(t, "ann@example.com", in.Email)
				assert.Equal(t, "Ann", in.Name)
				assert.Equal(t, "member", in.Role)
			}
		})
	}
}

func TestSlugify(t *testing.T) {
	for in, want := range map[string]string{
		"Acme Café":         "acme-cafe",
		"  --Hello, World!": "hello-world",
		"Ü":                 "org-u",
		"日本":                "org",
		"a  b":              "org-a-b",
		"Bücher & Co":       "bucher-co",
	} {
		got := Slugify(in)
		assert.Equal(t, want, got, in)
		assert.Regexp(t, slugPattern, got)
	}
}

func TestDecideRole(t *testing.T) {
	admin := auth.Principal{Permissions: rbac.PermissionsOf([]string{rbac.RoleAdmin})}
	createdRole := events.RoleCreated{Name: "support", Permissions: []string{rbac.UsersRead}}
	tests := []struct {
		name    string
		history []events.Event
		decide  func(Role) ([]events.Event, error)
		want    []events.Event
		code    apperr.Code
	}{
		{"create", nil, func(r Role) ([]events.Event, error) {
			return DecideCreateRole(r, admin.Can, CreateRole{Name: "support", Permissions: []string{rbac.UsersRead}})
		}, []events.Event{createdRole}, ""},
		{"create with a permission the creator lacks", nil, func(r Role) ([]events.Event, error) {
			return DecideCreateRole(r, admin.Can, CreateRole{Name: "boss", Permissions: []string{rbac.OrganizationWrite}})
		}, nil, apperr.CodeValidation},
		{"change permissions", []events.Event{createdRole}, func(r Role) ([]events.Event, error) {
			return DecideUpdateRole(r, admin.Can, UpdateRole{Permissions: &[]string{rbac.UsersRead, rbac.UsersWrite}})
		}, []events.Event{events.RoleUpdated{Permissions: []string{rbac.UsersRead, rbac.UsersWrite}, PreviousPermissions: []string{rbac.UsersRead}}}, ""},
		{"rename", []events.Event{createdRole}, func(r Role) ([]events.Event, error) {
			return DecideUpdateRole(r, admin.Can, UpdateRole{Name: ptr("helpdesk")})
		}, []events.Event{events.RoleUpdated{Name: &events.Change{Old: "support", New: "helpdesk"}}}, ""},
		{"no change", []events.Event{createdRole}, func(r Role) ([]events.Event, error) {
			return DecideUpdateRole(r, admin.Can, UpdateRole{Name: ptr("support"), Permissions: &[]string{rbac.UsersRead}})
		}, nil, ""},
		{"grant beyond the caller", []events.Event{createdRole}, func(r Role) ([]events.Event, error) {
			return DecideUpdateRole(r, admin.Can, UpdateRole{Permissions: &[]string{rbac.OrganizationWrite}})
		}, nil, apperr.CodeValidation},
		{"delete", []events.Event{createdRole}, DecideDeleteRole, []events.Event{events.RoleDeleted{Name: "support"}}, ""},
		{"delete twice", []events.Event{createdRole, events.RoleDeleted{Name: "support"}}, DecideDeleteRole, nil, apperr.CodeNotFound},
		{"update deleted", []events.Event{createdRole, events.RoleDeleted{Name: "support"}}, func(r Role) ([]events.Event, error) {
			return DecideUpdateRole(r, admin.Can, UpdateRole{Name: ptr("x")})
		}, nil, apperr.CodeNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.decide(given(EvolveRole, tt.history...))
			assert.Equal(t, tt.code, apperr.CodeOf(err), "error %v", err)
			assert.Equal(t, tt.want, got)
		})
	}
	var c CreateRole
	c = CreateRole{Name: "owner", Permissions: []string{"nope"}}
	err := c.Validate()
	assert.Equal(t, apperr.CodeValidation, apperr.CodeOf(err))
}

func TestDecideChatbot(t *testing.T) {
	secret := "0123456789abcdef-secret"
	created := events.ChatbotCreated{Name: "Helper", FallbackMessage: defaultFallback, Responder: events.Responder{Type: ResponderKnowledgeBase}}
	tests := []struct {
		name    string
		history []events.Event
		decide  func(Chatbot) ([]events.Event, error)
		want    []events.Event
		code    apperr.Code
	}{
		{"create", nil, func(b Chatbot) ([]events.Event, error) {
			c := CreateChatbot{Name: "Helper"}
			assert.NoError(t, c.Validate())
			return DecideCreateChatbot(b, c)
		}, []events.Event{created}, ""},
		{"webhook responder: the event says a secret is set, never which", []events.Event{created}, func(b Chatbot) ([]events.Event, error) {
			return DecideUpdateChatbot(b, UpdateChatbot{Responder: &ResponderInput{Type: ResponderWebhook, URL: "https://example.com/h", Secret: &secret}})
		}, []events.Event{events.ChatbotUpdated{Responder: &events.Responder{Type: ResponderWebhook, URL: "https://example.com/h", SecretSet: true}}}, ""},
		{"rename", []events.Event{created}, func(b Chatbot) ([]events.Event, error) {
			return DecideUpdateChatbot(b, UpdateChatbot{Name: ptr("Helper 2"), Description: ptr("")})
		}, []events.Event{events.ChatbotUpdated{Changes: map[string]events.Change{"name": {Old: "Helper", New: "Helper 2"}}}}, ""},
		{"no change", []events.Event{created}, func(b Chatbot) ([]events.Event, error) {
			return DecideUpdateChatbot(b, UpdateChatbot{Name: ptr("Helper"), Responder: &ResponderInput{Type: ResponderKnowledgeBase}})
		}, nil, ""},
		{"publish", []events.Event{created}, func(b Chatbot) ([]events.Event, error) { return DecidePublishChatbot(b, true) },
			[]events.Event{events.ChatbotPublished{}}, ""},
		{"publish twice", []events.Event{created, events.ChatbotPublished{}}, func(b Chatbot) ([]events.Event, error) { return DecidePublishChatbot(b, true) },
			nil, ""},
		{"unpublish", []events.Event{created, events.ChatbotPublished{}}, func(b Chatbot) ([]events.Event, error) { return DecidePublishChatbot(b, false) },
			[]events.Event{events.ChatbotUnpublished{}}, ""},
		{"delete", []events.Event{created}, DecideDeleteChatbot, []events.Event{events.ChatbotDeleted{}}, ""},
		{"publish deleted", []events.Event{created, events.ChatbotDeleted{}}, func(b Chatbot) ([]events.Event, error) { return DecidePublishChatbot(b, true) },
			nil, apperr.CodeNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.decide(given(EvolveChatbot, tt.history...))
			assert.Equal(t, tt.code, apperr.CodeOf(err), "error %v", err)
			assert.Equal(t, tt.want, got)
		})
	}
	bad := CreateChatbot{Name: "", Responder: &ResponderInput{Type: "carrier-pigeon"}}
	assert.Equal(t, apperr.CodeValidation, apperr.CodeOf(bad.Validate()))
	noSecret := CreateChatbot{Name: "x", Responder: &ResponderInput{Type: ResponderWebhook, URL: "https://example.com"}}
	err := noSecret.Validate()
	assert.ErrorContains(t, err, "VALIDATION_ERROR")
}

func TestEvolveKnowledge(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	k := EvolveKnowledge(Knowledge{}, events.KnowledgeImported{Entries: []events.KnowledgeEntry{{ID: "a"}, {ID: "b", Question: "q"}}}, at)
	k = EvolveKnowledge(k, events.KnowledgeEntryRemoved{EntryID: "a"}, at.Add(time.Hour))
	k = EvolveKnowledge(k, events.KnowledgeEntryUpdated{Entry: events.KnowledgeEntry{ID: "b", Question: "q2", Answer: "a2"}}, at.Add(2*time.Hour))
	assert.Equal(t, map[string]time.Time{"b": at}, k.Created, "an update keeps the creation time")
	assert.Equal(t, map[string]events.KnowledgeEntry{"b": {ID: "b", Question: "q2", Answer: "a2"}}, k.Contents,
		"what the trainer indexes: the live entries as they read now")
	bot := uuid.New()
	_, err := DecideUpdateEntry(k, bot, uuid.MustParse("00000000-0000-0000-0000-00000000000a"), EntryInput{})
	assert.Equal(t, apperr.CodeNotFound, apperr.CodeOf(err))
}

func TestDecidePatchEntry(t *testing.T) {
	bot, id := uuid.New(), uuid.MustParse("00000000-0000-0000-0000-00000000000b")
	k := EvolveKnowledge(Knowledge{}, events.KnowledgeEntryAdded{Entry: events.KnowledgeEntry{ID: id.String(), Question: "Hours?",
		Answer: "9 to 5", Tags: []string{"hours"}}}, time.Now())
	cases := []struct {
		name  string
		patch EntryPatch
		want  EntryInput
		code  apperr.Code
	}{
		{"answer only: the rest stays", EntryPatch{Answer: ptr(" 9 to 6 ")}, EntryInput{Question: "Hours?", Answer: "9 to 6", Tags: []string{"hours"}}, ""},
		{"tags cleared", EntryPatch{Tags: ptr([]string{})}, EntryInput{Question: "Hours?", Answer: "9 to 5", Tags: []string{}}, ""},
		{"nothing: unchanged", EntryPatch{}, EntryInput{Question: "Hours?", Answer: "9 to 5", Tags: []string{"hours"}}, ""},
		{"the merged entry is checked", EntryPatch{Question: ptr(" ")}, EntryInput{}, apperr.CodeValidation},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, evs, err := DecidePatchEntry(k, bot, id, c.patch)
			if c.code != "" {
				assert.Equal(t, c.code, apperr.CodeOf(err))
				assert.Empty(t, evs)
				return
			}
			assert.NoError(t, err)
			assert.Equal(t, c.want, got)
			assert.Equal(t, []events.Event{events.KnowledgeEntryUpdated{ChatbotID: bot.String(), Entry: c.want.Entry(id)}}, evs)
		})
	}
	_, _, err := DecidePatchEntry(k, bot, uuid.New(), EntryPatch{Answer: ptr("x")})
	assert.Equal(t, apperr.CodeNotFound, apperr.CodeOf(err))
}

func TestCheckActOnUser(t *testing.T) {
	actor, other := uuid.New(), uuid.New()
	owner := User{Exists: true, Roles: []string{rbac.RoleOwner}}
	member := User{Exists: true, Roles: []string{rbac.RoleMember, rbac.RoleAdmin}}
	for _, c := range []struct {
		name          string
		target        uuid.UUID
		mayGrantOwner bool
		user          User
		refused       bool
	}{
		{"an admin acts on a member", other, false, member, false},
		{"an admin acts on an owner", other, false, owner, true},
		{"an owner acts on an owner", other, true, owner, false},
		{"an owner acts on themselves", actor, false, owner, false},
	} {
		err := CheckActOnUser(actor, c.target, c.mayGrantOwner, c.user)
		if c.refused {
			assert.Equal(t, apperr.CodeForbidden, apperr.CodeOf(err), c.name)
		} else {
			assert.NoError(t, err, c.name)
		}
	}
}
