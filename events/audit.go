package events

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	segjson "github.com/segmentio/encoding/json"
)

// AuditEntry is one entry of the audit trail. It is derived from one event by AuditEntryOf
// and nothing else, so that `audit verify` can recompute it from the log and so that an
// event type added later is audited without any change to the audit projector.
type AuditEntry struct {
	ID             uuid.UUID       `json:"id"`
	Action         string          `json:"action"`
	ActorID        *uuid.UUID      `json:"actor_id"`
	ActorType      string          `json:"actor_type"`
	SubjectType    string          `json:"subject_type"`
	SubjectID      uuid.UUID       `json:"subject_id"`
	OrganizationID *uuid.UUID      `json:"organization_id"`
	RequestID      string          `json:"request_id"`
	CorrelationID  string          `json:"correlation_id"`
	CausationID    string          `json:"causation_id"`
	IPAddress      *string         `json:"ip_address"`
	UserAgent      *string         `json:"user_agent"`
	Changes        json.RawMessage `json:"changes"`
	OccurredAt     time.Time       `json:"occurred_at"`
	Position       int64           `json:"position"`
}

// MarshalJSON writes an absent correlation or causation id as null, as the envelope does.
func (a AuditEntry) MarshalJSON() ([]byte, error) {
	type plain AuditEntry
	return json.Marshal(struct {
		plain
		CorrelationID *string `json:"correlation_id"`
		CausationID   *string `json:"causation_id"`
	}{plain(a), OptionalID(a.CorrelationID), OptionalID(a.CausationID)})
}

// Redacted replaces the value of a secret-looking field in an audit entry's changes.
const Redacted = "[REDACTED]"

// AuditEntryOf derives the audit entry of an event: the action is the event type, the
// subject its stream, and the changes its data with secrets redacted. Where the data
// carries old and new values ({"changes": {"name": {"old": ..., "new": ...}}}) they are
// the changes; other fields of the data are kept beside them as they are.
func AuditEntryOf(e Envelope) (AuditEntry, error) {
	a := AuditEntry{
		ID: e.ID, Action: e.Type, ActorID: e.Actor.ID, ActorType: e.Actor.Type,
		SubjectType: e.StreamType, SubjectID: e.StreamID, OrganizationID: e.OrganizationID,
		RequestID: e.RequestID, CorrelationID: e.CorrelationID, CausationID: e.CausationID, OccurredAt: e.OccurredAt.UTC(), Position: e.Position,
	}
	if e.Metadata.IPAddress != "" {
		ip := e.Metadata.IPAddress
		a.IPAddress = &ip
	}
	if e.Metadata.UserAgent != "" {
		ua := e.Metadata.UserAgent
		a.UserAgent = &ua
	}
	changes, err := auditChanges(e.Data)
	if err != nil {
		return a, fmt.Errorf("audit entry of %s: %w", e.ID, err)
	}
	a.Changes = changes
	return a, nil
}

// auditChanges is an event's data as the audit trail shows it: flat, secrets redacted,
// numbers as written. The audit projector builds one for every event (segmentio's json,
// see codec.go).
func auditChanges(data json.RawMessage) (json.RawMessage, error) {
	var v any
	if _, err := segjson.Parse(data, &v, segjson.UseNumber); err != nil {
		return nil, err
	}
	return encodeJSON(redact(flatChanges(v)))
}

// flatChanges is decoded data with the fields of its "changes" object beside the others
// (those win a clash); data that is not an object is {"value": data}.
func flatChanges(v any) map[string]any {
	obj, ok := v.(map[string]any)
	if !ok {
		obj = map[string]any{"value": v}
	}
	if inner, ok := obj["changes"].(map[string]any); ok {
		delete(obj, "changes")
		for k, c := range inner {
			if _, taken := obj[k]; !taken {
				obj[k] = c
			}
		}
	}
	return obj
}

// secretWords mark a field whose value never appears in the audit trail. Events are
// designed to carry no secrets at all; this is the second line of defence.
var secretWords = []string{"password", "secret", "token_hash", "api_key", "apikey", "authorization",
	"private_key", "signing_key", "credential", "refresh_token", "access_token"}

func isSecretKey(k string) bool {
	k = strings.ToLower(k)
	for _, w := range secretWords {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

func redact(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if _, isBool := x.(bool); isSecretKey(k) && !isBool && x != nil {
				v[k] = Redacted
				continue
			}
			v[k] = redact(x)
		}
		return v
	case []any:
		for i := range v {
			v[i] = redact(v[i])
		}
		return v
	default:
		return v
	}
}

// SameAs reports whether a stored entry is the one its event derives.
func (a AuditEntry) SameAs(b AuditEntry) bool {
	eqID := func(x, y *uuid.UUID) bool { return (x == nil) == (y == nil) && (x == nil || *x == *y) }
	eqStr := func(x, y *string) bool { return (x == nil) == (y == nil) && (x == nil || *x == *y) }
	return a.ID == b.ID && a.Action == b.Action && eqID(a.ActorID, b.ActorID) && a.ActorType == b.ActorType &&
		a.SubjectType == b.SubjectType && a.SubjectID == b.SubjectID && eqID(a.OrganizationID, b.OrganizationID) &&
		a.RequestID == b.RequestID && a.CorrelationID == b.CorrelationID && a.CausationID == b.CausationID && eqStr(a.IPAddress, b.IPAddress) && eqStr(a.UserAgent, b.UserAgent) &&
		a.OccurredAt.Equal(b.OccurredAt) && a.Position == b.Position && sameJSON(a.Changes, b.Changes)
}

func sameJSON(a, b []byte) bool {
	canon := func(b []byte) []byte {
		var v any
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		if dec.Decode(&v) != nil {
			return nil
		}
		out, _ := json.Marshal(v)
		return out
	}
	x, y := canon(a), canon(b)
	return x != nil && bytes.Equal(x, y)
}
