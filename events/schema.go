package events

import (
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
)

// The JSON Schema (draft 2020-12) of each event type's data is derived from its Go type,
// so that the schema and what the code writes cannot drift apart. It is written here
// rather than with a schema library because it must say what encoding/json really
// emits: a nil slice or map is null, a pointer may be null, an `omitempty` field may be
// absent. Objects accept more properties than they list: a type's data only ever gains
// optional fields under one schema version.

func schemaOf(t reflect.Type) map[string]any {
	switch t.Kind() {
	case reflect.Pointer:
		return nullable(schemaOf(t.Elem()))
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer"}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.Slice, reflect.Array:
		return nullable(map[string]any{"type": "array", "items": schemaOf(t.Elem())})
	case reflect.Map:
		s := map[string]any{"type": "object"}
		if t.Elem().Kind() != reflect.Interface {
			s["additionalProperties"] = schemaOf(t.Elem())
		}
		return nullable(s)
	case reflect.Struct:
		props := map[string]any{}
		required := []string{}
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" {
				continue
			}
			if name == "" {
				name = f.Name
			}
			props[name] = schemaOf(f.Type)
			if !strings.Contains(opts, "omitempty") {
				required = append(required, name)
			}
		}
		return map[string]any{"type": "object", "properties": props, "required": required, "additionalProperties": true}
	default: // interface{}: anything
		return map[string]any{}
	}
}

func nullable(s map[string]any) map[string]any {
	switch t := s["type"].(type) {
	case string:
		s["type"] = []string{t, "null"}
	case nil:
		// already anything
	}
	return s
}

// schemaFor renders the schema of an event type's data.
func schemaFor(e Event, version int) json.RawMessage {
	s := schemaOf(reflect.TypeOf(e))
	s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
	s["title"] = e.EventType()
	s["$comment"] = "schema_version " + strconv.Itoa(version)
	b, err := json.Marshal(s)
	if err != nil {
		panic(err) // a map of strings and slices always encodes
	}
	return b
}
