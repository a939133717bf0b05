// Package httpx is the HTTP conventions of the API contract (internal/apidoc/openapi.yaml): the envelope, request ids, error codes
// mapped to statuses in one table, strict JSON decoding and body limits.
package httpx

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	segjson "github.com/segmentio/encoding/json"

	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/db"
)

// MaxBody is the largest request body accepted (the contract: 1 MiB).
const MaxBody = 1 << 20

// statusOf is the one table from error code to HTTP status.
var statusOf = map[apperr.Code]int{
	apperr.CodeValidation:       http.StatusUnprocessableEntity,
	apperr.CodeBadRequest:       http.StatusBadRequest,
	apperr.CodeUnauthenticated:  http.StatusUnauthorized,
	apperr.CodeForbidden:        http.StatusForbidden,
	apperr.CodeOrgSuspended:     http.StatusForbidden,
	apperr.CodeSessionRequired:  http.StatusForbidden,
	apperr.CodeNotFound:         http.StatusNotFound,
	apperr.CodeConflict:         http.StatusConflict,
	apperr.CodeEmailTaken:       http.StatusConflict,
	apperr.CodeRateLimited:      http.StatusTooManyRequests,
	apperr.CodePayloadTooLarge:  http.StatusRequestEntityTooLarge,
	apperr.CodeUnsupportedMedia: http.StatusUnsupportedMediaType,
	apperr.CodeInternal:         http.StatusInternalServerError,
	apperr.CodeUnavailable:      http.StatusServiceUnavailable,
}

// Envelope is every response body under /api/v1.
type Envelope struct {
	Success   bool          `json:"success"`
	Message   string        `json:"message"`
	Data      any           `json:"data,omitempty"`
	Meta      any           `json:"meta,omitempty"`
	ErrorCode apperr.Code   `json:"error_code,omitempty"`
	Errors    apperr.Fields `json:"errors,omitempty"`
	Timestamp string        `json:"timestamp"`
	RequestID string        `json:"request_id"`
}

// ErrorCodeKey is where Fail leaves the error code of the answer in the Gin context.
const ErrorCodeKey = "error_code"

const (
	requestIDKey     = "request_id"
	correlationIDKey = "correlation_id"
	causeKey         = "error_cause"
)

var requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

// RequestID takes X-Request-ID when it is well formed, else makes one, and echoes it. The
// correlation id is X-Correlation-ID when well formed (a caller's id for a whole
// workflow), else the request id; it is echoed too, goes into every event the request
// appends, and from there into every log line and audit entry those events cause.
//
// A request id it makes is a UUIDv7, which grows with time, as every id the server makes
// does: the audit trail keeps an index by request id and one by correlation id, and a
// random id landed each entry on any leaf of both, each a page to dirty, and after a
// checkpoint to log whole, wherever the entry before it went. Time-ordered ids go to the
// end of the organization's range (BENCHMARKS.md, twenty-sixth pass).
func RequestID() gin.HandlerFunc {
	return func(c *gin.Context) {
		id := c.GetHeader("X-Request-ID")
		if !requestIDPattern.MatchString(id) {
			id = uuid.Must(uuid.NewV7()).String()
		}
		corr := c.GetHeader("X-Correlation-ID")
		if !requestIDPattern.MatchString(corr) {
			corr = id
		}
		c.Set(requestIDKey, id)
		c.Set(correlationIDKey, corr)
		c.Header("X-Request-ID", id)
		c.Header("X-Correlation-ID", corr)
		c.Next()
	}
}

// SecurityHeaders sets what every answer carries: X-Content-Type-Options: nosniff, so
// that a browser never sniffs a JSON answer (which may echo input) into HTML.
func SecurityHeaders() gin.HandlerFunc {
	return func(c *gin.Context) {
		c.Header("X-Content-Type-Options", "nosniff")
		c.Next()
	}
}

// NoStore marks answers that carry credentials (tokens): no cache, shared or private,
// may keep them.
func NoStore() gin.HandlerFunc {
	return func(c *gin.Context) {
		c.Header("Cache-Control", "no-store")
		c.Header("Pragma", "no-cache")
		c.Next()
	}
}

// RequestIDOf returns the request's id.
func RequestIDOf(c *gin.Context) string { return c.GetString(requestIDKey) }

// CorrelationIDOf returns the request's correlation id.
func CorrelationIDOf(c *gin.Context) string { return c.GetString(correlationIDKey) }

// Timestamp is the envelope's time format: RFC 3339 in UTC with milliseconds.
func Timestamp() string { return time.Now().UTC().Format("2006-01-02T15:04:05.000Z07:00") }

// OK writes a success envelope.
func OK(c *gin.Context, status int, message string, data, meta any) {
	JSON(c, status, Envelope{Success: true, Message: message, Data: data, Meta: meta, Timestamp: Timestamp(), RequestID: RequestIDOf(c)})
}

// JSON answers v as JSON, as Gin's c.JSON does, with segmentio/encoding's json: the same
// bytes as encoding/json (TestAnswersAreEncodingJSONs) for less of the CPU every answer
// takes (BENCHMARKS.md, twenty-eighth pass), and with the body's length, where net/http
// sends a body of more than 2 kB in chunks. A value that does not encode is answered as
// an internal error, before anything is written.
func JSON(c *gin.Context, status int, v any) {
	b, err := segjson.Marshal(v)
	if err != nil {
		Fail(c, fmt.Errorf("encode the answer: %w", err))
		return
	}
	c.Data(status, "application/json; charset=utf-8", b)
}

// OKDocument writes a success envelope around doc, a JSON document the server made itself
// (a cached read model entry), as it is: through OK, encoding/json would check and
// compact it again, about 2.5 µs of a cached read's 90-120 µs of CPU (BENCHMARKS.md,
// issue 23, sixth pass). The envelope is OK's, byte for byte, without meta.
func OKDocument(c *gin.Context, status int, message string, doc json.RawMessage) {
	if len(doc) == 0 {
		OK(c, status, message, doc, nil)
		return
	}
	b := make([]byte, 0, len(doc)+160)
	b = append(b, `{"success":true,"message":`...)
	b = appendString(b, message)
	b = append(b, `,"data":`...)
	b = append(b, doc...)
	b = append(b, `,"timestamp":`...)
	b = appendString(b, Timestamp())
	b = append(b, `,"request_id":`...)
	b = appendString(b, RequestIDOf(c))
	c.Data(status, "application/json; charset=utf-8", append(b, '}'))
}

// appendString appends s as encoding/json writes a string: quoted as it is when it has
// nothing to escape (request ids, times, messages), else through encoding/json.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// Fail writes the error envelope for err. Errors without a code are internal: logged with
// their details, answered with "Internal error" only. An error that is only the request's
// own context ending (its client left) is ClientGone's.
func Fail(c *gin.Context, err error) {
	if errors.Is(err, context.Canceled) && c.Request.Context().Err() != nil {
		ClientGone(c)
		return
	}
	err = db.Classify(err)
	var e *apperr.Error
	if !errors.As(err, &e) {
		e = apperr.Wrap(apperr.CodeInternal, "Internal error", err)
	}
	status := statusOf[e.Code]
	if status == 0 {
		status = http.StatusInternalServerError
	}
	if status >= 500 {
		c.Set(causeKey, err.Error()) // for the request log line only, never the client
	}
	if e.RetryAfter > 0 {
		c.Header("Retry-After", strconv.Itoa(int(math.Ceil(e.RetryAfter.Seconds()))))
	}
	c.Set(ErrorCodeKey, string(e.Code))
	msg := e.Message
	if e.Code == apperr.CodeNotFound && c.Request.Method == http.MethodGet && c.FullPath() != "" &&
		c.GetHeader(ConsistencyTokenHeader) == "" {
		// Every such 404 says it, another tenant's id included, so it tells nothing.
		msg += notVisibleYet
	}
	c.Abort()
	JSON(c, status, Envelope{Success: false, Message: msg, ErrorCode: e.Code, Errors: e.Fields,
		Timestamp: Timestamp(), RequestID: RequestIDOf(c)})
}

// StatusClientClosed is the status logged and counted for a request whose client left
// before its answer (nginx's 499): nobody reads it.
const StatusClientClosed = 499

// ClientGone ends a request whose client closed the connection (or whose server is
// stopping) before it was answered. It is no error of the server's: it is logged at
// info level and counted as 499, not as a 500 that would page someone when a load
// balancer's or a client's timeout cuts many requests at once.
func ClientGone(c *gin.Context) {
	c.Set(causeKey, "the client closed the request")
	c.AbortWithStatus(StatusClientClosed)
}

// ConsistencyTokenHeader carries a command's consistency token, and a read's wait for it.
const ConsistencyTokenHeader = "X-Consistency-Token"

// notVisibleYet ends the message of a 404 to a read sent without a consistency token:
// reads answer from the read models, which follow a command by milliseconds.
const notVisibleYet = " (if it was written just now, it may not be visible yet: send the X-Consistency-Token " +
	"header its command returned, and the read waits for it)"

// Recover answers a panic with a 500 envelope and logs it.
// A handler that has already sent its status and cannot finish (a streamed export whose
// database went away) panics with http.ErrAbortHandler: that one is passed on, so that
// net/http breaks the connection and the client sees an incomplete transfer, not a
// complete-looking file. (gin's own recovery swallows it.)
func Recover() gin.HandlerFunc {
	return func(c *gin.Context) {
		defer func() {
			if rec := recover(); rec != nil {
				if err, ok := rec.(error); ok && errors.Is(err, http.ErrAbortHandler) {
					panic(rec)
				}
				Fail(c, fmt.Errorf("panic: %v", rec))
			}
		}()
		c.Next()
	}
}

// Logger logs each request once, with its status and duration.
func Logger(logger *slog.Logger) gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		// Deferred: a response aborted mid-stream (see Recover) is logged too.
		defer logRequest(c, logger, start)
		c.Next()
	}
}

// NoteError records why a response failed after its status was sent, for the request's
// log line.
func NoteError(c *gin.Context, err error) { c.Set(causeKey, err.Error()) }

func logRequest(c *gin.Context, logger *slog.Logger, start time.Time) {
	level := slog.LevelInfo
	if c.Writer.Status() >= 500 {
		level = slog.LevelError
	}
	attrs := []slog.Attr{
		slog.String("request_id", RequestIDOf(c)), slog.String("correlation_id", CorrelationIDOf(c)),
		slog.String("method", c.Request.Method),
		slog.String("route", c.FullPath()), slog.Int("status", c.Writer.Status()),
		slog.Duration("duration", time.Since(start)), slog.String("client_ip", c.ClientIP()),
	}
	if code := c.GetString(ErrorCodeKey); code != "" {
		attrs = append(attrs, slog.String("error_code", code))
	}
	if cause := c.GetString(causeKey); cause != "" {
		attrs = append(attrs, slog.String("error", cause))
	}
	logger.LogAttrs(c.Request.Context(), level, "http request", attrs...)
}

// Body limits a route's bodies to limit bytes (MaxBody when 0) and requires JSON where a
// body is sent, or CSV too when csv is set.
func Body(limit int64, csv bool) gin.HandlerFunc {
	if limit == 0 {
		limit = MaxBody
	}
	tooLarge := apperr.New(apperr.CodePayloadTooLarge, fmt.Sprintf("The request body is larger than %d MiB", limit>>20))
	return func(c *gin.Context) {
		if c.Request.Body == nil || c.Request.Method == http.MethodGet || c.Request.Method == http.MethodHead {
			c.Next()
			return
		}
		if c.Request.ContentLength > limit {
			Fail(c, tooLarge)
			return
		}
		c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, limit)
		if c.Request.ContentLength != 0 || c.GetHeader("Transfer-Encoding") != "" {
			mt, _, err := mime.ParseMediaType(c.GetHeader("Content-Type"))
			switch {
			case err == nil && mt == "application/json":
			case err == nil && csv && mt == "text/csv":
			case csv:
				Fail(c, apperr.New(apperr.CodeUnsupportedMedia, "The request body must be application/json or text/csv"))
				return
			default:
				Fail(c, apperr.New(apperr.CodeUnsupportedMedia, "The request body must be application/json"))
				return
			}
		}
		c.Next()
	}
}

// Decode reads the JSON body into dst strictly: malformed JSON and wrong types are
// BAD_REQUEST, unknown fields are VALIDATION_ERROR, an oversized body PAYLOAD_TOO_LARGE.
// An empty body decodes as {}.
func Decode(c *gin.Context, dst any) error {
	if c.Request.Body == nil {
		return nil
	}
	body, err := io.ReadAll(c.Request.Body)
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return apperr.New(apperr.CodePayloadTooLarge, fmt.Sprintf("The request body is larger than %d MiB", tooBig.Limit>>20))
	}
	if err != nil {
		return apperr.Wrap(apperr.CodeBadRequest, "The request body could not be read", err)
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		body = []byte("{}")
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		var syntax *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syntax), errors.Is(err, io.ErrUnexpectedEOF):
			return apperr.New(apperr.CodeBadRequest, "Malformed JSON")
		case errors.As(err, &typ):
			field := typ.Field
			if field == "" {
				return apperr.New(apperr.CodeBadRequest, "The request body must be a JSON object")
			}
			return apperr.New(apperr.CodeBadRequest, fmt.Sprintf("Field %q must be of type %s", field, jsonType(typ.Type.Kind().String())))
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return apperr.Invalid(name, "is not an allowed field")
		default:
			return apperr.New(apperr.CodeBadRequest, "Malformed JSON")
		}
	}
	if dec.More() {
		return apperr.New(apperr.CodeBadRequest, "Malformed JSON: more than one value")
	}
	return Storable(body)
}

// MaxDepth bounds how deeply a body's arrays and objects nest. PostgreSQL's jsonb parser
// recurses once a level and fails (an internal error, not the client's) long before a
// 16 KiB metadata object runs out of brackets; no command needs more than a few levels.
const MaxDepth = 32

var (
	errNUL  = apperr.New(apperr.CodeBadRequest, `Strings must not contain the NUL character (\u0000)`)
	errDeep = apperr.New(apperr.CodeBadRequest, fmt.Sprintf("JSON nests deeper than %d levels", MaxDepth))
)

// Storable refuses a well-formed JSON text that Go decodes but PostgreSQL cannot store:
// a string holding NUL (text and jsonb refuse it: SQLSTATE 22021 and 22P05, which would
// surface as a 500) or nesting deeper than MaxDepth. Invalid UTF-8 needs no check here:
// encoding/json turns it into U+FFFD. It walks the text once, without decoding it.
func Storable(b []byte) error {
	depth, inString := 0, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inString {
			switch c {
			case '\\':
				if i+5 < len(b) && b[i+1] == 'u' && string(b[i+2:i+6]) == "0000" {
					return errNUL
				}
				i++ // the escaped character cannot end the string
			case '"':
				inString = false
			case 0:
				return errNUL
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '[', '{':
			if depth++; depth > MaxDepth {
				return errDeep
			}
		case ']', '}':
			depth--
		}
	}
	return nil
}

// PlainText refuses a request whose path or query string, once decoded, holds NUL or
// invalid UTF-8 (400): handlers pass path and query values to PostgreSQL, which refuses
// both (SQLSTATE 22021).
func PlainText() gin.HandlerFunc {
	bad := apperr.New(apperr.CodeBadRequest, "The path and query string must be UTF-8 text without NUL characters")
	ok := func(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }
	return func(c *gin.Context) {
		if !ok(c.Request.URL.Path) {
			Fail(c, bad)
			return
		}
		if c.Request.URL.RawQuery != "" {
			for k, vs := range c.Request.URL.Query() {
				if !ok(k) {
					Fail(c, bad)
					return
				}
				for _, v := range vs {
					if !ok(v) {
						Fail(c, bad)
						return
					}
				}
			}
		}
		c.Next()
	}
}

func jsonType(kind string) string {
	switch kind {
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "slice", "array":
		return "array"
	case "map", "struct", "ptr":
		return "object"
	default:
		return "number"
	}
}

// PathUUID parses a UUID path parameter; a malformed one is BAD_REQUEST.
func PathUUID(c *gin.Context, name string) (uuid.UUID, error) {
	id, err := uuid.Parse(c.Param(name))
	if err != nil {
		return uuid.Nil, apperr.New(apperr.CodeBadRequest, fmt.Sprintf("Path parameter %q must be a UUID", name))
	}
	return id, nil
}

// NoRoute and NoMethod answer in the envelope.
func NoRoute(c *gin.Context) { Fail(c, apperr.New(apperr.CodeNotFound, "No such route")) }

// NoMethod answers 405 in the envelope.
func NoMethod(c *gin.Context) {
	c.AbortWithStatusJSON(http.StatusMethodNotAllowed, Envelope{Success: false, Message: "Method not allowed",
		ErrorCode: "METHOD_NOT_ALLOWED", Timestamp: Timestamp(), RequestID: RequestIDOf(c)})
}

// Route is one endpoint with its declared access: rbac.Public, rbac.Authenticated or a
// permission. Every route declares one; the server refuses to start otherwise.
type Route struct {
	Method  string
	Path    string
	Access  string
	Handler gin.HandlerFunc
	// Credentials marks answers that carry tokens: they are never stored, so
	// Idempotency-Key does not apply to them.
	Credentials bool
	// Session marks an act on the caller's own credentials (password, tokens, session):
	// it needs a login session, and an API token gets 403 SESSION_REQUIRED.
	Session bool
	// MaxBody overrides the 1 MiB body limit; CSV accepts text/csv bodies too.
	MaxBody int64
	CSV     bool
}

// R builds a Route.
func R(method, path, access string, h gin.HandlerFunc) Route {
	return Route{Method: method, Path: path, Access: access, Handler: h}
}

// WithCSV lets a route take text/csv bodies of up to limit bytes.
func (r Route) WithCSV(limit int64) Route { r.CSV, r.MaxBody = true, limit; return r }

// WithCredentials marks a route whose answer carries tokens.
func (r Route) WithCredentials() Route { r.Credentials = true; return r }

// WithSession marks a route that only a login session may call.
func (r Route) WithSession() Route { r.Session = true; return r }
