package domain

import (
	"net/mail"
	"strings"
	"unicode/utf8"

	"github.com/chatbotsaas/chatbotd/internal/apperr"
)

const (
	maxNameLen     = 120
	minPasswordLen = 8
	// maxPasswordLen bounds the work one login can ask of the hasher.
	maxPasswordLen = 256
)

func checkName(f apperr.Fields, field, v string) {
	switch n := utf8.RuneCountInString(v); {
	case n == 0:
		f.Add(field, "is required")
	case n > maxNameLen:
		f.Add(field, "must be at most 120 characters")
	}
}

// NormalizeEmail is the form emails are compared and stored in: trimmed, lowercased.
func NormalizeEmail(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

func checkEmail(f apperr.Fields, field, v string) {
	if v == "" {
		f.Add(field, "is required")
		return
	}
	a, err := mail.ParseAddress(v)
	if err != nil || a.Address != v || a.Name != "" || len(v) > 254 || !strings.Contains(v[strings.LastIndex(v, "@"):], ".") {
		f.Add(field, "must be a valid email address")
	}
}

func checkPassword(f apperr.Fields, field, v string) {
	switch n := utf8.RuneCountInString(v); {
	case n == 0:
		f.Add(field, "is required")
	case n < minPasswordLen:
		f.Add(field, "must be at least 8 characters")
	case len(v) > maxPasswordLen:
		f.Add(field, "must be at most 256 bytes")
	}
}
