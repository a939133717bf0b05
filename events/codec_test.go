package events_test

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
)

// stdEnvelope is the envelope's encoding as encoding/json writes it (what MarshalJSON did
// before the hot paths took another library).
func stdEnvelope(t testing.TB, e events.Envelope) []byte {
	t.Helper()
	type plain events.Envelope
	b, err := json.Marshal(struct {
		plain
		CorrelationID *string `json:"correlation_id"`
		CausationID   *string `json:"causation_id"`
	}{plain(e), events.OptionalID(e.CorrelationID), events.OptionalID(e.CausationID)})
	require.NoError(t, err)
	return b
}

// The event stream's hot paths (codec.go) encode and decode as encoding/json does: the
// same bytes for an envelope, the same values from an envelope, a frame and every event
// type's data, and an error where encoding/json gives one.
func TestHotPathJSONAgreesWithEncodingJSON(t *testing.T) {
	org, actor, store := uuid.New(), uuid.New(), uuid.New()
	at := time.Date(2026, 12, 7, 18, 0, 0, 123456789, time.UTC)
	envs := map[string]events.Envelope{
		"root event": {ID: uuid.New(), Type: "chatbot.created", SchemaVersion: 1, StreamType: "chatbot", StreamID: uuid.New(),
			StreamVersion: 1, Position: 7, OrganizationID: &org, OccurredAt: at, Actor: events.Actor{Type: events.ActorUser, ID: &actor},
			RequestID: "req", Data: json.RawMessage(`{"name": "A <b>bot</b> & co", "note": "line\u2028sep é 😀",` + "\n" + `  "n": [1, 2.5e3, -0]}`)},
		"caused, with a store": {ID: uuid.New(), Type: "message.replied", SchemaVersion: 1, StreamType: "message", StreamID: uuid.New(),
			StreamVersion: 3, Position: 1 << 53, OccurredAt: at.In(time.FixedZone("x", 3600)), CorrelationID: "corr", CausationID: uuid.NewString(),
			Metadata: events.Metadata{IPAddress: "::1", UserAgent: "agent <1> \"quoted\" \\ \t"}, Actor: events.Actor{Type: events.ActorSystem},
			Data: json.RawMessage(`{}`), StoreID: &store},
	}
	// Every event type, with every field set and with none.
	for _, s := range events.Catalog() {
		for name, sample := range map[string]reflect.Value{"full": reflect.New(reflect.TypeOf(s.Zero())), "empty": reflect.New(reflect.TypeOf(s.Zero()))} {
			if name == "full" {
				filled(sample.Elem())
			}
			data, err := json.Marshal(sample.Interface())
			require.NoError(t, err)
			enc, err := events.EncodeData(sample.Elem().Interface().(events.Event))
			require.NoError(t, err)
			assert.Equal(t, string(data), string(enc), s.Type+" "+name)
			envs[s.Type+" "+name] = events.Envelope{ID: uuid.New(), Type: s.Type, SchemaVersion: s.SchemaVersion, StreamType: "x",
				StreamID: uuid.New(), StreamVersion: 2, OccurredAt: at, Data: data}
		}
	}
	var frame []byte
	var framed []events.Envelope
	for name, e := range envs {
		body, err := e.MarshalJSON()
		require.NoError(t, err, name)
		assert.Equal(t, string(stdEnvelope(t, e)), string(body), name)
		frame, framed = events.AppendFrame(frame, body), append(framed, e)

		got, err := events.DecodeEnvelope(body)
		require.NoError(t, err, name)
		var want events.Envelope
		require.NoError(t, json.Unmarshal(body, &want), name)
		assert.Equal(t, want, got, name)

		ev, err := got.Decode()
		require.NoError(t, err, name)
		wantEv := reflect.New(reflect.TypeOf(ev))
		require.NoError(t, json.Unmarshal(got.Data, wantEv.Interface()), name)
		assert.Equal(t, wantEv.Elem().Interface(), ev, name)
	}
	got, err := events.DecodeFrame(events.CloseFrame(frame))
	require.NoError(t, err)
	var want []events.Envelope
	require.NoError(t, json.Unmarshal(events.CloseFrame(frame), &want))
	assert.Equal(t, want, got)

	// What encoding/json does with odd input, the hot path does too: keys matched without
	// regard to case, the last of a repeated key, invalid UTF-8 replaced, unknown keys
	// skipped, a null left as it was.
	id, sid := uuid.NewString(), uuid.NewString()
	for _, body := range []string{
		`{"ID":"` + id + `","Stream_ID":"` + sid + `","stream_version":1,"schema_version":1,"type":"user.role_assigned","data":{"role":"a"}}`,
		`{"id":"` + id + `","stream_id":"` + sid + `","stream_version":1,"stream_version":4,"type":"x","schema_version":1,"type":"user.role_assigned","data":{"role":"a"}}`,
		`{"id":"` + id + `","stream_id":"` + sid + `","stream_version":1,"schema_version":1,"type":"user.role_assigned","request_id":"a` + "\xff" + `b","data":{"role":"` + "\xfe" + `"}}`,
		`{"id":"` + id + `","stream_id":"` + sid + `","stream_version":1,"schema_version":1,"type":"user.role_assigned","extra":[1,{"a":null}],"data":{"role":"a","more":1}}`,
		`{"id":"` + id + `","stream_id":"` + sid + `","stream_version":1,"schema_version":1,"type":"user.role_assigned","organization_id":null,"correlation_id":null,"actor":null,"data":{"role":null}}`,
		` {"id":"` + id + `","stream_id":"` + sid + `","stream_version":1,"schema_version":1,"type":"user.role_assigned","data":{"role":"a\u00e9\ud83d\ude00"}} `,
	} {
		got, err := events.DecodeEnvelope([]byte(body))
		require.NoError(t, err, body)
		var want events.Envelope
		require.NoError(t, json.Unmarshal([]byte(body), &want), body)
		assert.Equal(t, want, got, body)
		ev, err := got.Decode()
		require.NoError(t, err, body)
		var wantEv events.UserRoleAssigned
		require.NoError(t, json.Unmarshal(got.Data, &wantEv), body)
		assert.Equal(t, wantEv, ev, body)
	}
	// What encoding/json refuses, the hot path refuses: each body is a whole envelope but
	// for one fault of its JSON.
	valid := `"id":"` + id + `","stream_id":"` + sid + `","stream_version":1,"schema_version":1,"type":"user.role_assigned"`
	for _, body := range []string{
		`{` + valid + `,"data":{"role":"a"}} x`, `{` + valid + `,"data":{"role":"a"}`, `{` + valid + `,"data":{"role":"a"},}`,
		`{` + valid + `,"position":"7","data":{"role":"a"}}`, `{` + valid + `,"position":1.5,"data":{"role":"a"}}`,
		`{` + valid + `,"position":99999999999999999999,"data":{"role":"a"}}`, `{` + valid + `,"organization_id":"not a uuid","data":{"role":"a"}}`,
		`{` + valid + `,"occurred_at":"yesterday","data":{"role":"a"}}`, `{` + valid + `,"data":{"role":}}`,
		`{` + valid + `,"request_id":"a` + "\x01" + `b","data":{"role":"a"}}`, `{` + valid + `,"metadata":[],"data":{"role":"a"}}`,
		`{` + valid + `,'data':{"role":"a"}}`, `{` + valid + `,"data":{"role":"a"}}}`, `{` + valid + `,"data":{"role":"\q"}}`,
	} {
		var std events.Envelope
		require.Error(t, json.Unmarshal([]byte(body), &std), "encoding/json accepts %q", body)
		_, err := events.DecodeEnvelope([]byte(body))
		assert.Error(t, err, body)
		_, err = events.DecodeFrame([]byte("[" + body + "]"))
		assert.Error(t, err, body)
	}
	// The store's metadata, as jsonb gives it back, decodes the same, and where encoding/json
	// refuses it, so does the hot path.
	for _, meta := range []string{`{}`, `{"ip_address": "127.0.0.1", "user_agent": "fasthttp"}`,
		`{"user_agent": "a \"q\" \\ \u00e9 \ud83d\ude00 <b>", "extra": {"x": [1, null]}, "ip_address": "::1"}`,
		`{"IP_Address": "10.0.0.1", "ip_address": "10.0.0.2", "user_agent": null}`, `{"user_agent": "` + "\xff" + `"}`} {
		var want, got events.Metadata
		require.NoError(t, json.Unmarshal([]byte(meta), &want), meta)
		require.NoError(t, events.DecodeMetadata([]byte(meta), &got), meta)
		assert.Equal(t, want, got, meta)
	}
	for _, m := range []events.Metadata{{}, {IPAddress: "::1", UserAgent: "a \"q\" \\ \u00e9 \u2028 <b> & \xff"}} {
		want, err := json.Marshal(m)
		require.NoError(t, err)
		got, err := events.EncodeMetadata(m)
		require.NoError(t, err)
		assert.Equal(t, string(want), string(got))
	}
	for _, meta := range []string{`[]`, `{"ip_address": 1}`, `{"ip_address": "a"`, `{"ip_address": "a"} x`, `null x`} {
		var std events.Metadata
		require.Error(t, json.Unmarshal([]byte(meta), &std), "encoding/json accepts %q", meta)
		assert.Error(t, events.DecodeMetadata([]byte(meta), &std), meta)
	}
	for _, data := range []string{`{"role":5}`, `{"role":["a"]}`, `[]`, `"role"`} {
		var std events.UserRoleAssigned
		require.Error(t, json.Unmarshal([]byte(data), &std), "encoding/json accepts %q", data)
		e, err := events.DecodeEnvelope([]byte(`{` + valid + `,"data":` + data + `}`))
		require.NoError(t, err, data)
		_, err = e.Decode()
		assert.Error(t, err, data)
	}
}

// BenchmarkHotPathJSON compares the hot paths' library with encoding/json on a frame of
// 64 user.created envelopes, as the relay publishes them: decoding the frame, and
// encoding its envelopes one by one.
func BenchmarkHotPathJSON(b *testing.B) {
	org := uuid.New()
	var envs []events.Envelope
	var frame []byte
	for i := range events.FrameMax {
		e := events.Envelope{ID: uuid.New(), Type: "user.created", SchemaVersion: 1, StreamType: events.StreamUser,
			StreamID: uuid.New(), StreamVersion: 1, Position: int64(1000 + i), OrganizationID: &org, OccurredAt: time.Now().UTC(),
			Actor: events.Actor{Type: events.ActorSystem},
			Data:  json.RawMessage(`{"name": "Bench User 12345", "email": "user12345@bench.example", "roles": ["member"], "status": "active"}`)}
		body, err := e.MarshalJSON()
		require.NoError(b, err)
		envs, frame = append(envs, e), events.AppendFrame(frame, body)
	}
	frame = events.CloseFrame(frame)
	b.Run("decode frame/encoding-json", func(b *testing.B) {
		b.SetBytes(int64(len(frame)))
		for b.Loop() {
			var out []events.Envelope
			require.NoError(b, json.Unmarshal(frame, &out))
		}
	})
	b.Run("decode frame/hot-path", func(b *testing.B) {
		b.SetBytes(int64(len(frame)))
		for b.Loop() {
			_, err := events.DecodeFrame(frame)
			require.NoError(b, err)
		}
	})
	b.Run("encode envelopes/encoding-json", func(b *testing.B) {
		for b.Loop() {
			for _, e := range envs {
				stdEnvelope(b, e)
			}
		}
	})
	b.Run("encode envelopes/hot-path", func(b *testing.B) {
		for b.Loop() {
			for _, e := range envs {
				_, err := e.MarshalJSON()
				require.NoError(b, err)
			}
		}
	})
}
