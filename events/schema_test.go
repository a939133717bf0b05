package events_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
)

func compile(t *testing.T, s events.Spec) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(s.Schema))
	require.NoError(t, err, s.Type)
	c := jsonschema.NewCompiler()
	require.NoError(t, c.AddResource(s.Type+".json", doc))
	sch, err := c.Compile(s.Type + ".json")
	require.NoError(t, err, s.Type)
	return sch
}

func validate(t *testing.T, sch *jsonschema.Schema, v any) error {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	require.NoError(t, err)
	return sch.Validate(inst)
}

// filled sets every field of v to a value: one element in each slice and map, every
// pointer set, so that a sample exercises the whole schema.
func filled(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		filled(v.Elem())
	case reflect.String:
		v.SetString("sample")
	case reflect.Int, reflect.Int64, reflect.Int32:
		v.SetInt(7)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 1, 1)
		filled(s.Index(0))
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		e := reflect.New(v.Type().Elem()).Elem()
		if e.Kind() == reflect.Interface {
			e.Set(reflect.ValueOf("any value"))
		} else {
			filled(e)
		}
		m.SetMapIndex(reflect.ValueOf("key"), e)
		v.Set(m)
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				filled(v.Field(i))
			}
		}
	}
}

// Every event type has a schema, and both a full sample and an empty one of its Go type
// validate against it; data of the wrong shape does not.
func TestEveryEventTypeHasASchemaItsSamplesValidate(t *testing.T) {
	catalog := events.Catalog()
	require.NotEmpty(t, catalog)
	for _, s := range catalog {
		require.NotEmpty(t, s.Schema, "%s has no schema", s.Type)
		sch := compile(t, s)
		zero := s.Zero()
		full := reflect.New(reflect.TypeOf(zero))
		filled(full.Elem())
		assert.NoError(t, validate(t, sch, zero), "%s: empty sample", s.Type)
		assert.NoError(t, validate(t, sch, full.Interface()), "%s: full sample", s.Type)
		assert.Error(t, validate(t, sch, []string{"not", "an", "object"}), s.Type)
	}
	// A field of the wrong type, or a required field missing, is refused.
	var created events.Spec
	for _, s := range catalog {
		if s.Type == "user.created" {
			created = s
		}
	}
	sch := compile(t, created)
	assert.Error(t, validate(t, sch, map[string]any{"name": 5, "email": "a@b.c", "roles": []string{}, "status": "active"}))
	assert.Error(t, validate(t, sch, map[string]any{"name": "Ann", "roles": []string{}, "status": "active"}))
	assert.NoError(t, validate(t, sch, map[string]any{"name": "Ann", "email": "a@b.c", "roles": []string{"member"},
		"status": "active", "added_later": "a field a newer version of the code writes"}))
}
