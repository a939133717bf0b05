package events

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The audit trail's changes of an event, encoded with the hot paths' library, are what
// encoding/json makes of the same data: flattened, redacted, numbers as written.
func TestAuditChangesAreEncodingJSONs(t *testing.T) {
	for _, data := range []string{
		`{}`, `{"name":"Ada <b>\"L\"</b> & co \u2028 \u00e9 \ud83d\ude00","n":12345678901234567890,"f":1.50,"e":1e400,"neg":-0}`,
		`{"changes":{"name":{"old":"a","new":"b"},"email":{"old":null,"new":"x@y"}},"name":"kept","roles":["a","b"]}`,
		`{"nested":{"z":1,"a":[true,false,null,{"k":"\u00ff"}]},"s":"` + "bad \xff\xfe utf-8" + `"}`,
		`{"secret":"s3","password_hash":"h","changes":{"token":{"old":"a","new":"b"}}}`,
		` {"spaced" : [ 1 , 2 ] } `, `[1,2]`, `"text"`, `42`,
	} {
		got, err := auditChanges(json.RawMessage(data))
		require.NoError(t, err, data)
		dec := json.NewDecoder(strings.NewReader(data))
		dec.UseNumber()
		var v any
		require.NoError(t, dec.Decode(&v), data)
		want, err := json.Marshal(redact(flatChanges(v)))
		require.NoError(t, err, data)
		assert.Equal(t, string(want), string(got), data)
	}
}
