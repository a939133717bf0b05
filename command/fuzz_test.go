package command

import (
	"bytes"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/chatbotsaas/chatbotd/command/domain"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/httpx"
)

// commandInputs decodes a body into each command's input, as its handler does
// (httpx.Decode: strict JSON), and validates it with the command's own rules. Each entry
// returns the validation error (nil when the input is valid).
var commandInputs = []struct {
	name     string
	validate func(body []byte) (decodeErr, validateErr error)
}{
	{"register", input(func(c *domain.Register) error { return c.Validate() })},
	{"login", input(func(c *domain.Login) error { return c.Validate() })},
	{"refresh", input(func(c *domain.Refresh) error { return nil })},
	{"change password", input(func(c *domain.ChangePassword) error { return c.Validate() })},
	{"create user", input(func(c *domain.CreateUser) error { return c.Validate() })},
	{"update user", input(func(c *domain.UpdateUser) error { return c.Validate() })},
	{"create role", input(func(c *domain.CreateRole) error { return c.Validate() })},
	{"update role", input(func(c *domain.UpdateRole) error { return c.Validate() })},
	{"update organization", input(func(c *domain.UpdateOrganization) error { return c.Validate() })},
	{"suspend organization", input(func(c *domain.SuspendOrganization) error { return c.Validate() })},
	{"create token", input(func(c *domain.CreateToken) error { return c.Validate(time.Now()) })},
	{"create chatbot", input(func(c *domain.CreateChatbot) error { return c.Validate() })},
	{"update chatbot", input(func(c *domain.UpdateChatbot) error { return c.Validate(true) })},
	{"knowledge entry", input(func(c *domain.EntryInput) error {
		_, err := domain.DecideAddEntry(uuid.New(), uuid.New(), *c)
		return err
	})},
	{"knowledge import", input(func(c *[]domain.EntryInput) error {
		f := apperr.Fields{}
		for i := range *c {
			(*c)[i].Check(f, "entries.")
		}
		return f.Err()
	})},
	{"start conversation", input(func(c *domain.StartConversation) error { return nil })},
	{"post message", input(func(c *domain.PostMessage) error { return nil })},
	{"create webhook", input(func(c *domain.CreateWebhook) error { return c.Validate() })},
}

// input returns a validator for T: decode the body strictly, then validate; a valid
// input must stay valid when validated again (normalizing is idempotent).
func input[T any](validate func(*T) error) func([]byte) (error, error) {
	return func(body []byte) (error, error) {
		gin.SetMode(gin.TestMode)
		c, _ := gin.CreateTestContext(httptest.NewRecorder())
		c.Request = httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		var in T
		if err := httpx.Decode(c, &in); err != nil {
			return err, nil
		}
		if err := storable(reflect.ValueOf(in), 0); err != nil {
			return errUnstorable{err}, nil
		}
		if err := validate(&in); err != nil {
			return nil, err
		}
		if err := validate(&in); err != nil {
			return nil, errAgain{err}
		}
		return nil, nil
	}
}

type errAgain struct{ error }

// errUnstorable: the decoder accepted what PostgreSQL refuses to store.
type errUnstorable struct{ error }

// storable checks what PostgreSQL will be asked to store of a decoded input: every
// string valid UTF-8 without NUL (text and jsonb refuse it), every number finite,
// nesting within httpx.MaxDepth.
func storable(v reflect.Value, depth int) error {
	if depth > httpx.MaxDepth+2 { // the input struct and its field add two levels
		return fmt.Errorf("nested %d levels deep", depth)
	}
	switch v.Kind() {
	case reflect.String:
		if s := v.String(); !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
			return fmt.Errorf("string %q cannot be stored", s)
		}
	case reflect.Float32, reflect.Float64:
		if f := v.Float(); math.IsInf(f, 0) || math.IsNaN(f) {
			return fmt.Errorf("number %v cannot be stored", f)
		}
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			return storable(v.Elem(), depth)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				if err := storable(v.Field(i), depth+1); err != nil {
					return err
				}
			}
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			if err := storable(v.Index(i), depth+1); err != nil {
				return err
			}
		}
	case reflect.Map:
		for _, k := range v.MapKeys() {
			if err := storable(k, depth); err != nil {
				return err
			}
			if err := storable(v.MapIndex(k), depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// clientError: the code an answer of 4xx carries, never INTERNAL_ERROR or no code at all.
func clientError(t *testing.T, what string, err error) {
	t.Helper()
	switch apperr.CodeOf(err) {
	case apperr.CodeValidation, apperr.CodeBadRequest, apperr.CodePayloadTooLarge, apperr.CodeConflict:
	default:
		t.Fatalf("%s: %v has code %q: it would not be a 4xx", what, err, apperr.CodeOf(err))
	}
}

// FuzzCommandInputs: any body, for any command, is decoded and validated without a
// panic, and is either accepted or refused with a client error in the API's envelope
// (never a 500); what the decoder accepts PostgreSQL can store (no NUL, no runaway
// nesting, finite numbers); an accepted input validates again unchanged.
func FuzzCommandInputs(f *testing.F) {
	for _, seed := range []string{
		``, `{}`, `[]`, `null`, `{"name":"Ann","email":"ann@example.com","password":"password1","password_confirmation":"password1"}`,
		`{"organization_name":"Acme","name":"Ann","email":"ann@example.com","password":"password1"}`,
		`{"email":"ANN@Example.com ","password":"x"}`, `{"name":"  ","description":"` + strings.Repeat("x", 2001) + `"}`,
		`{"name":"Bot","responder":{"type":"webhook","url":"https://example.com/hook","secret":"0123456789abcdef"}}`,
		`{"name":"Bot","responder":{"type":"knowledge_base","url":"x"}}`, `{"question":"How?","answer":"So.","tags":["a","a"]}`,
		`[{"question":"Q","answer":"A"},{"question":"","answer":""}]`, `{"name":"t","abilities":["users.read","users.read"],"expires_at":"2000-01-01T00:00:00Z"}`,
		`{"name":"Role","permissions":["users.read","nope"]}`, `{"url":"http://10.0.0.1/","events":["user.*"]}`,
		`{"content":"hello"}`, `{"metadata":{"a":[1,{"b":null}]}}`, `{"reason":"abuse"}`, `{"name":1}`, `{"unknown":true}`,
		`{"name":"a"}{"name":"b"}`, `{"name":"\u0000\ud800"}`, `{"email":"a@b","role":"owner"}`, "\xff\xfe{",
		`{"content":"a\\u0000b"}`, `{"password":"x\u0000"}`, "{\"name\":\"a\x00\"}",
		`{"metadata":` + strings.Repeat(`{"a":[`, 20) + `1` + strings.Repeat(`]}`, 20) + `}`,
		`{"metadata":{"n":1e308,"m":-1e400,"k":123456789012345678901234567890}}`, `{"expires_at":"9999-12-31T23:59:59Z"}`,
	} {
		for i := range commandInputs {
			f.Add(uint8(i), []byte(seed))
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		cmd := commandInputs[int(which)%len(commandInputs)]
		decodeErr, validateErr := cmd.validate(body)
		if bad, ok := decodeErr.(errUnstorable); ok {
			t.Fatalf("%s: decoded what PostgreSQL cannot store: %v", cmd.name, bad.error)
		}
		if decodeErr != nil {
			clientError(t, cmd.name+" decode", decodeErr)
			return
		}
		if again, ok := validateErr.(errAgain); ok {
			t.Fatalf("%s: valid input is invalid when validated again: %v", cmd.name, again.error)
		}
		if validateErr != nil {
			clientError(t, cmd.name+" validate", validateErr)
		}
	})
}

// FuzzParseCSV: any text/csv body is parsed into entries or refused with a client error,
// never a panic; every parsed entry has its three columns' values.
func FuzzParseCSV(f *testing.F) {
	for _, seed := range []string{
		"question,answer,tags\nHow?,So.,a;b\n", "question,answer\n\"multi\nline\",\"with \"\"quotes\"\"\"\n",
		"answer,question,tags\nA,Q,\n", "question,answer,tags\n", "", "\n\n", "question\nQ\n", "question,answer,tags\nQ,A,;;;\n",
		"\xef\xbb\xbfquestion,answer\nQ,A\n", "question,answer,tags,extra\nQ,A,t,x\n", "question,answer\n\"unterminated\n",
		"question,question,answer\nQ,Q2,A\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		entries, err := ParseCSV(bytes.NewReader(body))
		if err != nil {
			clientError(t, "csv", err)
			return
		}
		for _, e := range entries {
			for _, tag := range e.Tags {
				if strings.Contains(tag, ";") {
					t.Fatalf("tag %q still holds the separator", tag)
				}
			}
		}
	})
}
