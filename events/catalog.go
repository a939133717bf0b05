package events

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"

	"github.com/google/uuid"
)

// Event is a domain event's data. Its type name is "<stream_type>.<past_tense_verb>"
// and never changes once published: consumers bind to it.
type Event interface {
	EventType() string
}

// Stream types.
const (
	StreamOrganization = "organization"
	StreamUser         = "user"
	StreamSession      = "session"
	StreamLogin        = "login"
	StreamToken        = "token"
	StreamRole         = "role"
	StreamAccess       = "access"
	StreamChatbot      = "chatbot"
	StreamKnowledge    = "knowledge"
	StreamTraining     = "training"
	StreamConversation = "conversation"
	StreamMessage      = "message"
	StreamWebhook      = "webhook"
)

// A chatbot's knowledge and training streams have ids derived from the chatbot's, so
// that any consumer can find them.
var (
	knowledgeNamespace = uuid.MustParse("9a4f1e3c-54d2-4b0e-8d5c-7f1a2b3c4d5e")
	trainingNamespace  = uuid.MustParse("0c2b7e1a-3f4d-4e5b-9a6c-8d7e6f5a4b3c")
)

// KnowledgeStreamID is the id of a chatbot's knowledge stream.
func KnowledgeStreamID(chatbot uuid.UUID) uuid.UUID {
	return uuid.NewSHA1(knowledgeNamespace, chatbot[:])
}

// TrainingStreamID is the id of a chatbot's training stream.
func TrainingStreamID(chatbot uuid.UUID) uuid.UUID {
	return uuid.NewSHA1(trainingNamespace, chatbot[:])
}

// Change is one field's old and new value, carried by *.updated events so that the audit
// trail can show what changed without reading older events.
type Change struct {
	Old string `json:"old"`
	New string `json:"new"`
}

// OrganizationCreated: an organization signed up (POST /auth/register).
type OrganizationCreated struct {
	Name   string `json:"name"`
	Slug   string `json:"slug"`
	Status string `json:"status"`
	// Platform marks the platform operators' organization (made by `chatbotd admin create`).
	Platform bool `json:"platform,omitempty"`
}

// OrganizationSuspended: a platform operator suspended the organization; its users and
// tokens stop working at once.
type OrganizationSuspended struct {
	Reason string `json:"reason"`
}

// OrganizationResumed: a platform operator lifted the suspension.
type OrganizationResumed struct{}

// OrganizationUpdated: the organization's name or slug changed.
type OrganizationUpdated struct {
	Changes map[string]Change `json:"changes"`
}

// UserCreated: a user joined an organization, by registering it or by being added.
type UserCreated struct {
	Name   string   `json:"name"`
	Email  string   `json:"email"`
	Roles  []string `json:"roles"`
	Status string   `json:"status"`
	// PlatformOperator marks an account made by `chatbotd admin create`: it may list and
	// suspend every organization.
	PlatformOperator bool `json:"platform_operator,omitempty"`
}

// UserUpdated: a user's name or email changed.
type UserUpdated struct {
	Changes map[string]Change `json:"changes"`
}

// UserDeactivated: a user was set to status "deactivated"; their sessions stop working.
type UserDeactivated struct{}

// UserReactivated: a deactivated user was set back to "active".
type UserReactivated struct{}

// UserDeleted: a user was soft-deleted; their email is free again, their history stays.
type UserDeleted struct{}

// UserPasswordChanged: a user changed their password. The hash is in no event.
type UserPasswordChanged struct{}

// UserRoleAssigned: a role was given to a user.
type UserRoleAssigned struct {
	Role string `json:"role"`
}

// UserRoleRemoved: a role was taken from a user.
type UserRoleRemoved struct {
	Role string `json:"role"`
}

// SessionStarted: a user logged in; the session's refresh token has generation 1.
type SessionStarted struct {
	UserID    string `json:"user_id"`
	ExpiresAt string `json:"expires_at"`
}

// SessionRefreshed: the refresh token was rotated to a new generation; older ones die.
type SessionRefreshed struct {
	Generation int    `json:"generation"`
	ExpiresAt  string `json:"expires_at"`
}

// SessionReuseDetected: a refresh token of an older generation was presented again, a
// sign that it was stolen. The session is revoked by the same command.
type SessionReuseDetected struct {
	PresentedGeneration int `json:"presented_generation"`
	CurrentGeneration   int `json:"current_generation"`
}

// SessionRevoked: the session ended (logout or reuse); its tokens are dead.
type SessionRevoked struct {
	Reason string `json:"reason"`
}

// LoginFailed: a login attempt failed. Reason is for auditors only; the client always
// gets the same answer.
type LoginFailed struct {
	Email  string `json:"email"`
	Reason string `json:"reason"`
}

// LoginRateLimited: a login was refused unchecked because too many attempts for the
// email failed recently.
type LoginRateLimited struct {
	Email             string `json:"email"`
	RetryAfterSeconds int    `json:"retry_after_seconds"`
}

// TokenCreated: a user made an API token. The secret is shown once to its creator and
// is in no event.
type TokenCreated struct {
	UserID    string   `json:"user_id"`
	Name      string   `json:"name"`
	Abilities []string `json:"abilities"`
	ExpiresAt *string  `json:"expires_at"`
}

// TokenRevoked: an API token was revoked; it stops working at once.
type TokenRevoked struct {
	Reason string `json:"reason"`
}

// RoleCreated: an organization made a custom role.
type RoleCreated struct {
	Name        string   `json:"name"`
	Permissions []string `json:"permissions"`
}

// RoleUpdated: a custom role was renamed or its permissions changed. Permissions, when
// set, is the complete new list; Previous the one before.
type RoleUpdated struct {
	Name                *Change  `json:"name,omitempty"`
	Permissions         []string `json:"permissions,omitempty"`
	PreviousPermissions []string `json:"previous_permissions,omitempty"`
}

// RoleDeleted: a custom role that nobody held was deleted.
type RoleDeleted struct {
	Name string `json:"name"`
}

// AccessDenied: an authenticated caller asked for something their permissions do not
// allow.
type AccessDenied struct {
	UserID     string `json:"user_id"`
	Credential string `json:"credential"`
	Method     string `json:"method"`
	Route      string `json:"route"`
	Permission string `json:"permission"`
}

// PasswordChangeFailed: a signed-in user asked to change their password and the current
// password they gave was wrong. It holds no password material; like AccessDenied it is
// on the user's access stream.
type PasswordChangeFailed struct {
	UserID     string `json:"user_id"`
	Credential string `json:"credential"`
	Reason     string `json:"reason"`
}

// Responder is how a chatbot answers. A webhook's secret is never in an event: SecretSet
// says one is stored (sealed) beside the log.
type Responder struct {
	Type      string `json:"type"`
	URL       string `json:"url,omitempty"`
	SecretSet bool   `json:"secret_set,omitempty"`
}

// ChatbotCreated: an organization made a chatbot (a draft).
type ChatbotCreated struct {
	Name            string    `json:"name"`
	Description     string    `json:"description"`
	WelcomeMessage  string    `json:"welcome_message"`
	FallbackMessage string    `json:"fallback_message"`
	Responder       Responder `json:"responder"`
}

// ChatbotUpdated: a chatbot's texts or responder changed.
type ChatbotUpdated struct {
	Changes   map[string]Change `json:"changes,omitempty"`
	Responder *Responder        `json:"responder,omitempty"`
}

// ChatbotPublished: the chatbot answers conversations.
type ChatbotPublished struct{}

// ChatbotUnpublished: the chatbot is a draft again.
type ChatbotUnpublished struct{}

// ChatbotDeleted: the chatbot was soft-deleted.
type ChatbotDeleted struct{}

// KnowledgeEntry is one question and its answer.
type KnowledgeEntry struct {
	ID       string   `json:"id"`
	Question string   `json:"question"`
	Answer   string   `json:"answer"`
	Tags     []string `json:"tags"`
}

// KnowledgeEntryAdded: an entry was added to a chatbot's knowledge base. Knowledge has a
// stream of its own per chatbot, so that a large knowledge base never slows commands
// on the chatbot.
type KnowledgeEntryAdded struct {
	ChatbotID string         `json:"chatbot_id"`
	Entry     KnowledgeEntry `json:"entry"`
}

// KnowledgeEntryUpdated: an entry's question, answer or tags changed (the whole new
// entry).
type KnowledgeEntryUpdated struct {
	ChatbotID string         `json:"chatbot_id"`
	Entry     KnowledgeEntry `json:"entry"`
}

// KnowledgeEntryRemoved: an entry was removed.
type KnowledgeEntryRemoved struct {
	ChatbotID string `json:"chatbot_id"`
	EntryID   string `json:"entry_id"`
}

// KnowledgeImported: entries were imported in bulk, all or nothing.
type KnowledgeImported struct {
	ChatbotID string           `json:"chatbot_id"`
	Entries   []KnowledgeEntry `json:"entries"`
}

// TrainingRequested: someone asked to (re)build a chatbot's search index from its
// knowledge base as of KnowledgeVersion.
type TrainingRequested struct {
	ChatbotID        string `json:"chatbot_id"`
	KnowledgeVersion int    `json:"knowledge_version"`
}

// TrainingCompleted: the index was built; the responder answers from it.
type TrainingCompleted struct {
	ChatbotID        string `json:"chatbot_id"`
	Entries          int    `json:"entries"`
	KnowledgeVersion int    `json:"knowledge_version"`
}

// ConversationStarted: an end user began talking to a chatbot.
type ConversationStarted struct {
	ChatbotID string         `json:"chatbot_id"`
	Metadata  map[string]any `json:"metadata"`
}

// MessagePosted: a user message was accepted; the responder answers it in the
// background. Each message is a stream of its own, so a conversation's length costs
// nothing when posting or answering.
type MessagePosted struct {
	ConversationID string `json:"conversation_id"`
	ChatbotID      string `json:"chatbot_id"`
	Content        string `json:"content"`
}

// MessageReplied: the chatbot answered a message (exactly once: the reply is version 2
// of the message's stream).
type MessageReplied struct {
	ConversationID string `json:"conversation_id"`
	ChatbotID      string `json:"chatbot_id"`
	ReplyID        string `json:"reply_id"`
	Content        string `json:"content"`
	// Source is "knowledge_base" (EntryID says which entry), "fallback" or "webhook".
	Source  string `json:"source"`
	EntryID string `json:"entry_id,omitempty"`
}

// MessageFailed: every attempt to answer a message failed. Schema version 2 added the
// required Code; version 1 events are upcast (upcast.go).
type MessageFailed struct {
	ConversationID string `json:"conversation_id"`
	ChatbotID      string `json:"chatbot_id"`
	// Code is one of the Failure* constants; Reason says it for people.
	Code   string `json:"code"`
	Reason string `json:"reason"`
}

// Why a message could not be answered (MessageFailed.Code).
const (
	FailureChatbotDeleted = "chatbot_deleted"           // the chatbot was deleted before it answered
	FailureUndeliverable  = "undeliverable"             // every attempt to process the message failed
	FailureWebhookSecret  = "webhook_secret_unreadable" // the webhook's sealed secret cannot be opened
	FailureWebhookError   = "webhook_error"             // the webhook did not answer usably
)

// TrainingFailed: building the index failed for good; the previous index (if any) stays.
type TrainingFailed struct {
	ChatbotID string `json:"chatbot_id"`
	Reason    string `json:"reason"`
}

// WebhookCreated: an organization subscribed a URL to the events whose types match
// Events (topic patterns: "conversation.*", "message.#", "#"). Its signing secret is
// stored sealed beside the log, never in an event.
type WebhookCreated struct {
	URL    string   `json:"url"`
	Events []string `json:"events"`
}

// WebhookDeleted: the subscription was deleted; nothing more is delivered to it.
type WebhookDeleted struct{}

// WebhookDisabled: the subscription was switched off because its deliveries kept failing.
type WebhookDisabled struct {
	Reason              string `json:"reason"`
	ConsecutiveFailures int    `json:"consecutive_failures"`
	LastError           string `json:"last_error"`
}

func (WebhookCreated) EventType() string  { return "webhook.created" }
func (WebhookDeleted) EventType() string  { return "webhook.deleted" }
func (WebhookDisabled) EventType() string { return "webhook.disabled" }

func (OrganizationCreated) EventType() string { return "organization.created" }
func (OrganizationUpdated) EventType() string { return "organization.updated" }
func (OrganizationSuspended) EventType() string {
	return "organization.suspended"
}
func (OrganizationResumed) EventType() string  { return "organization.resumed" }
func (UserCreated) EventType() string          { return "user.created" }
func (UserUpdated) EventType() string          { return "user.updated" }
func (UserDeactivated) EventType() string      { return "user.deactivated" }
func (UserReactivated) EventType() string      { return "user.reactivated" }
func (UserDeleted) EventType() string          { return "user.deleted" }
func (UserRoleAssigned) EventType() string     { return "user.role_assigned" }
func (UserPasswordChanged) EventType() string  { return "user.password_changed" }
func (UserRoleRemoved) EventType() string      { return "user.role_removed" }
func (SessionStarted) EventType() string       { return "session.started" }
func (SessionRefreshed) EventType() string     { return "session.refreshed" }
func (SessionReuseDetected) EventType() string { return "session.reuse_detected" }
func (SessionRevoked) EventType() string       { return "session.revoked" }
func (LoginFailed) EventType() string          { return "login.failed" }
func (LoginRateLimited) EventType() string     { return "login.rate_limited" }
func (TokenCreated) EventType() string         { return "token.created" }
func (TokenRevoked) EventType() string         { return "token.revoked" }
func (RoleCreated) EventType() string          { return "role.created" }
func (RoleUpdated) EventType() string          { return "role.updated" }
func (RoleDeleted) EventType() string          { return "role.deleted" }
func (AccessDenied) EventType() string         { return "access.denied" }
func (PasswordChangeFailed) EventType() string { return "access.password_change_failed" }
func (ChatbotCreated) EventType() string       { return "chatbot.created" }
func (ChatbotUpdated) EventType() string       { return "chatbot.updated" }
func (ChatbotPublished) EventType() string     { return "chatbot.published" }
func (ChatbotUnpublished) EventType() string   { return "chatbot.unpublished" }
func (ChatbotDeleted) EventType() string       { return "chatbot.deleted" }
func (KnowledgeEntryAdded) EventType() string  { return "knowledge.entry_added" }
func (KnowledgeEntryUpdated) EventType() string {
	return "knowledge.entry_updated"
}
func (KnowledgeEntryRemoved) EventType() string { return "knowledge.entry_removed" }
func (KnowledgeImported) EventType() string     { return "knowledge.imported" }
func (TrainingRequested) EventType() string     { return "training.requested" }
func (TrainingCompleted) EventType() string     { return "training.completed" }
func (TrainingFailed) EventType() string        { return "training.failed" }
func (ConversationStarted) EventType() string   { return "conversation.started" }
func (MessagePosted) EventType() string         { return "message.posted" }
func (MessageReplied) EventType() string        { return "message.replied" }
func (MessageFailed) EventType() string         { return "message.failed" }

// Spec describes one event type of the catalog.
type Spec struct {
	Type          string
	SchemaVersion int
	// Schema is the JSON Schema of the type's data, derived from its Go type.
	Schema json.RawMessage
	new    func() Event
}

// specs is the catalog: every event type the system writes, with its current schema
// version. It is a table of constants, not mutable state.
var specs = func() map[string]Spec {
	all := []struct {
		version int
		sample  Event
	}{
		{1, OrganizationCreated{}}, {1, OrganizationUpdated{}}, {1, OrganizationSuspended{}}, {1, OrganizationResumed{}},
		{1, UserCreated{}}, {1, UserUpdated{}}, {1, UserDeactivated{}}, {1, UserReactivated{}},
		{1, UserDeleted{}}, {1, UserRoleAssigned{}}, {1, UserRoleRemoved{}}, {1, UserPasswordChanged{}},
		{1, SessionStarted{}}, {1, SessionRefreshed{}}, {1, SessionReuseDetected{}}, {1, SessionRevoked{}},
		{1, LoginFailed{}}, {1, LoginRateLimited{}},
		{1, TokenCreated{}}, {1, TokenRevoked{}},
		{1, RoleCreated{}}, {1, RoleUpdated{}}, {1, RoleDeleted{}},
		{1, AccessDenied{}}, {1, PasswordChangeFailed{}},
		{1, ChatbotCreated{}}, {1, ChatbotUpdated{}}, {1, ChatbotPublished{}}, {1, ChatbotUnpublished{}}, {1, ChatbotDeleted{}},
		{1, KnowledgeEntryAdded{}}, {1, KnowledgeEntryUpdated{}}, {1, KnowledgeEntryRemoved{}}, {1, KnowledgeImported{}},
		{1, TrainingRequested{}}, {1, TrainingCompleted{}}, {1, TrainingFailed{}},
		{1, ConversationStarted{}}, {1, MessagePosted{}}, {1, MessageReplied{}}, {2, MessageFailed{}},
		{1, WebhookCreated{}}, {1, WebhookDeleted{}}, {1, WebhookDisabled{}},
	}
	m := make(map[string]Spec, len(all))
	for _, a := range all {
		t := reflect.TypeOf(a.sample)
		m[a.sample.EventType()] = Spec{
			Type:          a.sample.EventType(),
			SchemaVersion: a.version,
			Schema:        schemaFor(a.sample, a.version),
			new:           func() Event { return reflect.New(t).Interface().(Event) },
		}
	}
	return m
}()

// Zero is an event of the type with empty data.
func (s Spec) Zero() Event { return reflect.ValueOf(s.new()).Elem().Interface().(Event) }

// Catalog lists every event type, sorted by name.
func Catalog() []Spec {
	out := make([]Spec, 0, len(specs))
	for _, s := range specs {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Type < out[j].Type })
	return out
}

// SchemaVersionOf returns the current schema version of an event type.
func SchemaVersionOf(eventType string) (int, bool) {
	s, ok := specs[eventType]
	return s.SchemaVersion, ok
}

// StreamTypeOf returns the stream type named by an event type's prefix.
func StreamTypeOf(eventType string) string {
	for i := 0; i < len(eventType); i++ {
		if eventType[i] == '.' {
			return eventType[:i]
		}
	}
	return eventType
}

func decodeData(eventType string, version int, data []byte) (Event, error) {
	s, ok := specs[eventType]
	if !ok {
		return nil, fmt.Errorf("unknown event type %q", eventType)
	}
	data, _, err := upcastData(eventType, version, data)
	if err != nil {
		return nil, err
	}
	p := s.new()
	if err := decodeJSON(data, p); err != nil {
		return nil, fmt.Errorf("decode %s: %w", eventType, err)
	}
	// p is a pointer to the struct; hand back the value so that type switches on the
	// value types of this file work.
	return reflect.ValueOf(p).Elem().Interface().(Event), nil
}
