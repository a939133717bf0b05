package httpx

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	segjson "github.com/segmentio/encoding/json"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
)

type embedded struct {
	Kind string `json:"kind"`
}

type answerSample struct {
	embedded
	ID        uuid.UUID         `json:"id"`
	Owner     *uuid.UUID        `json:"owner"`
	Nobody    *uuid.UUID        `json:"nobody,omitempty"`
	Name      string            `json:"name"`
	Tags      []string          `json:"tags"`
	NoTags    []string          `json:"no_tags"`
	Empty     []string          `json:"empty"`
	Count     int64             `json:"count"`
	Quoted    int               `json:"quoted,string"`
	Ratio     float64           `json:"ratio"`
	Small     float64           `json:"small"`
	Large     float64           `json:"large"`
	Negative  float32           `json:"negative"`
	On        bool              `json:"on"`
	At        time.Time         `json:"at"`
	Doc       json.RawMessage   `json:"doc"`
	Attrs     map[string]any    `json:"attrs"`
	ByID      map[uuid.UUID]int `json:"by_id"`
	Raw       []byte            `json:"raw"`
	Any       any               `json:"any"`
	Skipped   string            `json:"-"`
	unexposed string
}

// Every answer is encoded with segmentio/encoding's json (JSON); it must give the bytes
// encoding/json gives, which Gin's c.JSON wrote before: clients compare bodies, and the
// idempotency replay stores them.
func TestAnswersAreEncodingJSONs(t *testing.T) {
	owner := uuid.New()
	zone := time.FixedZone("x", -(3*3600 + 30*60))
	tricky := "Ada <b>\"Lovelace\"</b> & co \\ \u2028\u2029 é 😀 \x00\x1f\x7f bad:\xff\xfe end"
	full := answerSample{embedded: embedded{Kind: "k<"}, ID: uuid.New(), Owner: &owner, Name: tricky,
		Tags: []string{"a", tricky, ""}, Empty: []string{}, Count: math.MaxInt64, Quoted: -42, Ratio: 0.1,
		Small: 1e-7, Large: 1e21, Negative: -0.5, On: true, At: time.Date(2026, 12, 8, 3, 4, 5, 123456789, zone),
		Doc:   json.RawMessage(" {\"b\" : [1, 2.50, \"<x>\"],\n \"a\":null} "),
		Attrs: map[string]any{"z": 1, "a": []any{"x", 2.5, nil, map[string]any{"q": true, "b": "&"}}, "m": tricky, "é": 3},
		ByID:  map[uuid.UUID]int{uuid.New(): 1, uuid.New(): 2, uuid.New(): 3}, Raw: []byte("bytes\x00\xff"),
		Any: &embedded{Kind: "pointer"}, Skipped: "no", unexposed: "no"}
	values := map[string]any{
		"a success envelope": Envelope{Success: true, Message: `Chatbot "x" <created>`, Data: full,
			Meta:      gin.H{"stream_id": uuid.New(), "stream_version": 3, "position": int64(1) << 53, "pagination": gin.H{"page": 1, "per_page": 15}},
			Timestamp: Timestamp(), RequestID: "req-1"},
		"an error envelope": Envelope{Success: false, Message: "Validation failed", ErrorCode: apperr.CodeValidation,
			Errors: apperr.Fields{"name": {"must be <set>", tricky}, "email": {"x"}}, Timestamp: Timestamp(), RequestID: "r"},
		"a list":            []answerSample{full, {}},
		"nothing":           Envelope{},
		"a nil map and nil": gin.H{"data": nil, "m": map[string]string(nil), "s": []int(nil)},
		"floats":            []float64{0, math.Copysign(0, -1), 1, -1.5, 123456789, 1e20, 1e21, 1e-6, 1e-7, math.MaxFloat64, math.SmallestNonzeroFloat64, 0.000001234},
	}
	// And strings of random tricky bytes: controls, quotes, HTML, invalid UTF-8, line
	// separators, multi-byte runes cut short.
	pieces := []string{"a", "<", ">", "&", "\"", "\\", "\n", "\t", "\x00", "\x1f", "\x7f", "\xff", "\xc3", "é", "\u2028", "\u2029", "😀", "\xf0\x9f", " ", "/"}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 500 {
		var s string
		for range r.IntN(12) {
			s += pieces[r.IntN(len(pieces))]
		}
		values["random string "+strconv.Itoa(i)] = gin.H{s: s, "v": []string{s}}
	}
	for name, v := range values {
		want, err := json.Marshal(v)
		require.NoError(t, err, name)
		got, err := segjson.Marshal(v)
		require.NoError(t, err, name)
		require.Equal(t, string(want), string(got), name)
	}

	// Through the handler: JSON answers as c.JSON did, status and headers included, and
	// says the body's length (where net/http would send a body of more than 2 kB in
	// chunks).
	gin.SetMode(gin.TestMode)
	answer := func(write func(c *gin.Context)) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		c, _ := gin.CreateTestContext(w)
		c.Request = httptest.NewRequest(http.MethodGet, "/", nil)
		write(c)
		return w
	}
	env := values["a success envelope"]
	want := answer(func(c *gin.Context) { c.JSON(http.StatusCreated, env) })
	got := answer(func(c *gin.Context) { JSON(c, http.StatusCreated, env) })
	assert.Equal(t, want.Code, got.Code)
	assert.Equal(t, strconv.Itoa(got.Body.Len()), got.Header().Get("Content-Length"))
	got.Header().Del("Content-Length")
	assert.Equal(t, want.Header(), got.Header())
	assert.Equal(t, want.Body.String(), got.Body.String())
}

// A value that does not encode is an internal error, answered before anything is written.
func TestAnAnswerThatDoesNotEncodeIsAnInternalError(t *testing.T) {
	gin.SetMode(gin.TestMode)
	w := httptest.NewRecorder()
	c, _ := gin.CreateTestContext(w)
	c.Request = httptest.NewRequest(http.MethodGet, "/", nil)
	OK(c, http.StatusOK, "x", gin.H{"nan": math.NaN()}, nil)
	assert.Equal(t, http.StatusInternalServerError, w.Code)
	var body Envelope
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &body))
	assert.Equal(t, apperr.CodeInternal, body.ErrorCode)
	assert.NotContains(t, w.Body.String(), "NaN")
}

// A command's answer (a chatbot and its consistency token), through Gin's c.JSON
// (encoding/json) and through JSON.
func BenchmarkAnswer(b *testing.B) {
	gin.SetMode(gin.TestMode)
	at := time.Date(2026, 12, 8, 3, 4, 5, 123456000, time.UTC)
	chatbot := readmodel.Chatbot{ID: uuid.New(), OrganizationID: uuid.New(), Name: "Support bot",
		Description: "Answers the questions of our customers", WelcomeMessage: "Hello! How can I help?",
		FallbackMessage: "Sorry, I do not know that yet.", Status: "draft", Responder: readmodel.Responder{Type: "knowledge_base"},
		CreatedAt: at, UpdatedAt: at}
	env := Envelope{Success: true, Message: "Chatbot created", Data: chatbot,
		Meta: gin.H{"stream_id": chatbot.ID, "stream_version": 1, "position": 123456}, Timestamp: Timestamp(), RequestID: "0193a5f2-7c1e-7e4a-9d2b-3f4e5a6b7c8d"}
	for _, bc := range []struct {
		name  string
		write func(c *gin.Context)
	}{
		{"gin c.JSON", func(c *gin.Context) { c.JSON(http.StatusCreated, env) }},
		{"JSON", func(c *gin.Context) { JSON(c, http.StatusCreated, env) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				c, _ := gin.CreateTestContext(w)
				bc.write(c)
			}
		})
	}
}
