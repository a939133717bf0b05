package events

import (
	"encoding/json"
	"fmt"
	"slices"
)

// Event evolution. A breaking change to an event type's data (a field removed, renamed or
// newly required) is a new schema version. The log is never rewritten: a stored event
// keeps the version it was written with, and an upcaster turns version n's data into
// version n+1's when the event is read. Every reader (the store's reads, so aggregates,
// the relay, /events, replay and rebuilds; and DecodeEnvelope, so a consumer fed an
// envelope published before an upgrade) therefore sees the current version only. The
// tamper-evidence hash alone is taken over the stored form (Envelope.stored).
//
// An upcaster is a pure function of the old data: replaying the log twice gives the same
// events.

type upcastKey struct {
	eventType string
	from      int
}

// upcasters maps (type, version n) to the function that gives version n+1's data.
var upcasters = map[upcastKey]func(json.RawMessage) (json.RawMessage, error){
	{"message.failed", 1}: upcastMessageFailedV1,
}

// UpcastsFrom lists the older schema versions of an event type that are read as the
// current one, oldest first.
func UpcastsFrom(eventType string) []int {
	var out []int
	for k := range upcasters {
		if k.eventType == eventType {
			out = append(out, k.from)
		}
	}
	slices.Sort(out)
	return out
}

// upcastData brings data of the given version up to the type's current version.
func upcastData(eventType string, version int, data json.RawMessage) (json.RawMessage, int, error) {
	s, ok := specs[eventType]
	if !ok || version == s.SchemaVersion {
		return data, version, nil // unknown types pass through: consumers may skip them
	}
	if version > s.SchemaVersion {
		return nil, 0, fmt.Errorf("event type %q: schema version %d is newer than this build's %d", eventType, version, s.SchemaVersion)
	}
	for v := version; v < s.SchemaVersion; v++ {
		up, ok := upcasters[upcastKey{eventType, v}]
		if !ok {
			return nil, 0, fmt.Errorf("event type %q: no upcaster from schema version %d", eventType, v)
		}
		var err error
		if data, err = up(data); err != nil {
			return nil, 0, fmt.Errorf("event type %q: upcast from schema version %d: %w", eventType, v, err)
		}
	}
	return data, s.SchemaVersion, nil
}

// Upcast returns e with its data at the current schema version of its type. An envelope
// read from the store keeps its stored form for the tamper-evidence hash.
func Upcast(e Envelope) (Envelope, error) {
	data, version, err := upcastData(e.Type, e.SchemaVersion, e.Data)
	if err != nil {
		return e, fmt.Errorf("event %s: %w", e.ID, err)
	}
	if version == e.SchemaVersion {
		return e, nil
	}
	if e.stored == nil {
		e.stored = &storedForm{schemaVersion: e.SchemaVersion, data: e.Data}
	}
	e.Data, e.SchemaVersion = data, version
	return e, nil
}

// message.failed version 1 carried a free-text reason only. Version 2 adds the required
// machine-readable code (analytics break failures down by it; webhook consumers branch
// on it). Version 1's reasons were fixed texts of the responders, except the webhook
// responder's, which all describe a failed call ("webhook: …", "cancelled").
func upcastMessageFailedV1(data json.RawMessage) (json.RawMessage, error) {
	var v1 map[string]any
	if err := json.Unmarshal(data, &v1); err != nil {
		return nil, err
	}
	reason, _ := v1["reason"].(string)
	code := FailureWebhookError
	switch {
	case reason == "the chatbot was deleted":
		code = FailureChatbotDeleted
	case reason == "the message could not be answered":
		code = FailureUndeliverable
	case reason == "the webhook secret cannot be read":
		code = FailureWebhookSecret
	}
	v1["code"] = code
	return json.Marshal(v1)
}
