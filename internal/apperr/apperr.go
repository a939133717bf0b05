// Package apperr is the one error type of the application. Every layer returns it (or
// wraps it); the HTTP layer maps its Code to a status in one table (httpx.statusOf).
package apperr

import (
	"errors"
	"fmt"
	"sort"
	"time"
)

// Code is the machine-readable error code of the API contract.
type Code string

const (
	CodeValidation      Code = "VALIDATION_ERROR"
	CodeBadRequest      Code = "BAD_REQUEST"
	CodeUnauthenticated Code = "UNAUTHENTICATED"
	CodeForbidden       Code = "FORBIDDEN"
	CodeOrgSuspended    Code = "ORGANIZATION_SUSPENDED"
	// CodeSessionRequired refuses an API token an act on its user's own credentials
	// (password, tokens, sessions): those need a login session.
	CodeSessionRequired  Code = "SESSION_REQUIRED"
	CodeNotFound         Code = "NOT_FOUND"
	CodeConflict         Code = "CONFLICT"
	CodeEmailTaken       Code = "EMAIL_TAKEN"
	CodeRateLimited      Code = "RATE_LIMITED"
	CodePayloadTooLarge  Code = "PAYLOAD_TOO_LARGE"
	CodeUnsupportedMedia Code = "UNSUPPORTED_MEDIA_TYPE"
	CodeInternal         Code = "INTERNAL_ERROR"
	CodeUnavailable      Code = "SERVICE_UNAVAILABLE"
)

// Error is an error a client may see: its Message is safe to show. Err, when set, is
// the cause, for logs only.
type Error struct {
	Code    Code
	Message string
	Fields  Fields // only with CodeValidation
	// RetryAfter, with CodeRateLimited, is when the client may try again.
	RetryAfter time.Duration
	Err        error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// New returns an error with a code and a client-safe message.
func New(code Code, message string) *Error { return &Error{Code: code, Message: message} }

// Wrap returns an error with a code and message whose cause is err.
func Wrap(code Code, message string, err error) *Error {
	return &Error{Code: code, Message: message, Err: err}
}

// NotFound is the answer for a missing resource and for another tenant's resource alike.
func NotFound(what string) *Error { return New(CodeNotFound, what+" not found") }

// Conflict is the answer for a stale expected version.
func Conflict(message string) *Error { return New(CodeConflict, message) }

// Fields collects validation messages by JSON field name.
type Fields map[string][]string

// Add records a message for a field.
func (f Fields) Add(field, message string) { f[field] = append(f[field], message) }

// Err returns a VALIDATION_ERROR when any message was recorded, else nil.
func (f Fields) Err() error {
	if len(f) == 0 {
		return nil
	}
	for k := range f {
		sort.Strings(f[k])
	}
	return &Error{Code: CodeValidation, Message: "Validation failed", Fields: f}
}

// Invalid is a VALIDATION_ERROR naming one field.
func Invalid(field, message string) error {
	return Fields{field: {message}}.Err()
}

// CodeOf returns the code of the first *Error in err's chain, or "" when there is none.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}
