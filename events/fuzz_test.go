package events_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/chatbotsaas/chatbotd/events"
)

// FuzzDecodeEnvelope: whatever a consumer receives, decoding it never panics; an envelope
// that decodes has an event that decodes or fails cleanly, and survives a round trip
// through the relay's encoding unchanged.
func FuzzDecodeEnvelope(f *testing.F) {
	at := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	org := uuid.MustParse("0190a5b2-0000-7000-8000-000000000001")
	for _, e := range []events.Envelope{
		{ID: uuid.MustParse("0190a5b2-0000-7000-8000-000000000002"), StreamType: events.StreamUser, StreamID: uuid.MustParse("0190a5b2-0000-7000-8000-000000000003"),
			StreamVersion: 1, Type: "user.created", SchemaVersion: 1, OrganizationID: &org, OccurredAt: at, Position: 7,
			Data: json.RawMessage(`{"name":"Ann","email":"ann@example.com","roles":["member"],"status":"active"}`)},
		{ID: uuid.MustParse("0190a5b2-0000-7000-8000-000000000004"), StreamType: "message", StreamID: uuid.MustParse("0190a5b2-0000-7000-8000-000000000005"),
			StreamVersion: 2, Type: "message.failed", SchemaVersion: 1, OccurredAt: at, CorrelationID: "c", CausationID: "d",
			Data: json.RawMessage(`{"conversation_id":"0190a5b2-0000-7000-8000-000000000006","reason":"timeout"}`)},
	} {
		b, err := json.Marshal(e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{``, `{}`, `null`, `[]`, `{"id":"x"}`, `{"id":"0190a5b2-0000-7000-8000-000000000002","stream_id":"0190a5b2-0000-7000-8000-000000000003","stream_version":1,"type":"user.created","data":null}`,
		`{"id":"0190a5b2-0000-7000-8000-000000000002","stream_id":"0190a5b2-0000-7000-8000-000000000003","stream_version":1,"type":"no.such","schema_version":99,"data":{}}`,
		`{"id":"0190a5b2-0000-7000-8000-000000000002","stream_id":"0190a5b2-0000-7000-8000-000000000003","stream_version":-1,"type":"user.created"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		e, err := events.DecodeEnvelope(body)
		if err != nil {
			return
		}
		if e.ID == uuid.Nil || e.StreamID == uuid.Nil || e.StreamVersion < 1 || e.Type == "" {
			t.Fatalf("an envelope without its keys was accepted: %+v", e)
		}
		_, _ = e.Decode() // an unknown type or a bad payload is an error, not a panic
		again, err := json.Marshal(e)
		if err != nil {
			t.Fatalf("a decoded envelope does not encode: %v", err)
		}
		e2, err := events.DecodeEnvelope(again)
		if err != nil {
			t.Fatalf("a re-encoded envelope does not decode: %v\n%s", err, again)
		}
		if e2.ID != e.ID || e2.StreamID != e.StreamID || e2.StreamVersion != e.StreamVersion || e2.Type != e.Type ||
			e2.SchemaVersion != e.SchemaVersion || e2.Position != e.Position {
			t.Fatalf("round trip changed the envelope: %+v → %+v", e, e2)
		}
	})
}

// FuzzParseToken: a consistency token from a client is parsed or refused, never a panic,
// and what parses is given back by Token unchanged in meaning.
func FuzzParseToken(f *testing.F) {
	for _, s := range []string{"user:0190a5b2-0000-7000-8000-000000000003:2:17", "", ":::", "user:x:1:1", "user:0190a5b2-0000-7000-8000-000000000003:-1:1",
		"user:0190a5b2-0000-7000-8000-000000000003:1:99999999999999999999", "a:b:c:d:e", "chatbot:0190A5B2-0000-7000-8000-000000000003:0:0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := events.ParseToken(s)
		if err != nil {
			return
		}
		if r.Version < 0 || r.Position < 0 || r.StreamType == "" {
			t.Fatalf("accepted %q as %+v", s, r)
		}
		back, err := events.ParseToken(r.Token())
		if err != nil {
			t.Fatalf("the token of a parsed token does not parse: %q → %q: %v", s, r.Token(), err)
		}
		if back.StreamType != r.StreamType || back.StreamID != r.StreamID || back.Version != r.Version || back.Position != r.Position {
			t.Fatalf("round trip changed %q: %+v → %+v", s, r, back)
		}
	})
}
