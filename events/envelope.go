// Package events is the contract between the write side and everything that reads the
// log: the envelope of the API contract (API.md), the catalog of event types, their
// schemas and upcasters. It imports no infrastructure; the PostgreSQL event store and
// the relay that publishes committed events in commit order are beside it, in
// events/eventstore.
package events

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Actor is who caused an event: a user, an API token, the system, or an anonymous caller
// (a failed login).
type Actor struct {
	Type string     `json:"type"`
	ID   *uuid.UUID `json:"id"`
}

// Actor types.
const (
	ActorUser      = "user"
	ActorSystem    = "system"
	ActorAnonymous = "anonymous"
)

// Metadata is request context kept with every event for the audit trail. It never holds
// secrets.
type Metadata struct {
	IPAddress string `json:"ip_address,omitempty"`
	UserAgent string `json:"user_agent,omitempty"`
}

// Envelope is one stored event as the API contract defines it: what the relay publishes, what
// GET /api/v1/events streams and what webhooks POST.
type Envelope struct {
	ID             uuid.UUID       `json:"id"`
	Type           string          `json:"type"`
	SchemaVersion  int             `json:"schema_version"`
	StreamType     string          `json:"stream_type"`
	StreamID       uuid.UUID       `json:"stream_id"`
	StreamVersion  int             `json:"stream_version"`
	Position       int64           `json:"position"`
	OrganizationID *uuid.UUID      `json:"organization_id"`
	OccurredAt     time.Time       `json:"occurred_at"`
	Actor          Actor           `json:"actor"`
	CorrelationID  string          `json:"correlation_id"`
	CausationID    string          `json:"causation_id"`
	RequestID      string          `json:"request_id"`
	Metadata       Metadata        `json:"metadata"`
	Data           json.RawMessage `json:"data"`
	// StoreID names the event store that wrote the event (set by the relay, and on
	// what is read from the store's API). Deployments that share a broker tell their
	// events apart by it; an envelope without one was published before it existed.
	StoreID *uuid.UUID `json:"store_id,omitempty"`

	// rawMetadata is the metadata as stored, when the envelope was read from the store:
	// the tamper-evidence hash covers the stored bytes, not what this version decodes.
	rawMetadata []byte
	// stored is the data as stored, when it was upcast on reading (upcast.go).
	stored *storedForm
}

type storedForm struct {
	schemaVersion int
	data          json.RawMessage
}

// MarshalJSON writes an absent correlation or causation id (a root event has no cause;
// an event no request started has no correlation) as null, as the envelope's schema says,
// never as an empty string. Decoding takes null or a string.
func (e Envelope) MarshalJSON() ([]byte, error) {
	type plain Envelope
	return encodeJSON(struct {
		plain
		CorrelationID *string `json:"correlation_id"`
		CausationID   *string `json:"causation_id"`
	}{plain(e), OptionalID(e.CorrelationID), OptionalID(e.CausationID)})
}

// OptionalID is an optional id as JSON carries it: nil (null) when empty.
func OptionalID(id string) *string {
	if id == "" {
		return nil
	}
	return &id
}

// OfStore reports whether e is an event of store: it names store, or names none (it was
// published before envelopes carried their store), or store is uuid.Nil (any store).
func (e Envelope) OfStore(store uuid.UUID) bool {
	return store == uuid.Nil || e.StoreID == nil || *e.StoreID == store
}

// DecodeEnvelope parses a message body, rejecting one that lacks what consumers rely on.
func DecodeEnvelope(body []byte) (Envelope, error) {
	var e Envelope
	if err := decodeJSON(body, &e); err != nil {
		return e, fmt.Errorf("decode envelope: %w", err)
	}
	return checkDecoded(e)
}

// checkDecoded rejects a decoded envelope that lacks what consumers rely on, and upcasts
// it to the current version of its type.
func checkDecoded(e Envelope) (Envelope, error) {
	switch {
	case e.ID == uuid.Nil:
		return e, fmt.Errorf("decode envelope: missing id")
	case e.StreamID == uuid.Nil:
		return e, fmt.Errorf("decode envelope %s: missing stream_id", e.ID)
	case e.StreamVersion < 1:
		return e, fmt.Errorf("decode envelope %s: bad stream_version %d", e.ID, e.StreamVersion)
	case e.Type == "":
		return e, fmt.Errorf("decode envelope %s: missing type", e.ID)
	case len(e.Data) == 0:
		return e, fmt.Errorf("decode envelope %s: missing data", e.ID)
	}
	// An envelope published before an upgrade is read as the current version.
	return Upcast(e)
}

// Decode returns the typed event carried by the envelope.
func (e Envelope) Decode() (Event, error) { return decodeData(e.Type, e.SchemaVersion, e.Data) }

// CausedBy is the context of events that a consumer appends in reaction to e (a reply, a
// training's outcome): the system acts, within e's correlation and request, caused by e.
func CausedBy(e Envelope) Meta {
	return Meta{Actor: Actor{Type: ActorSystem}, CorrelationID: e.CorrelationID, CausationID: e.ID.String(), RequestID: e.RequestID}
}

// KeepStoredMetadata records the metadata exactly as stored, for a store that read e:
// the tamper-evidence hash (EventHash) covers the stored bytes, not their decoding.
func (e *Envelope) KeepStoredMetadata(raw []byte) { e.rawMetadata = raw }
