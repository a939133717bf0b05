package events

import (
	"fmt"
	"regexp"
	"strings"
)

// CheckTopicPattern says what is wrong with an AMQP topic pattern over event types: words
// of a-z, 0-9 and _ separated by dots, where a word may be "*" (one word) or "#" (any).
func CheckTopicPattern(p string) error {
	if p == "" || len(p) > 100 {
		return fmt.Errorf("must be 1 to 100 characters")
	}
	for _, w := range strings.Split(p, ".") {
		if w == "*" || w == "#" {
			continue
		}
		if w == "" || strings.TrimLeft(w, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
			return fmt.Errorf("%q is not a topic pattern: words of a-z, 0-9 and _, or * or #, separated by dots", p)
		}
	}
	return nil
}

// TopicMatcher reports whether an event type matches any of patterns (checked with
// CheckTopicPattern), as RabbitMQ would route it.
func TopicMatcher(patterns []string) func(eventType string) bool {
	res, all := TopicRegexps(patterns)
	if all {
		return func(string) bool { return true }
	}
	compiled := make([]*regexp.Regexp, len(res))
	for i, r := range res {
		compiled[i] = regexp.MustCompile(r)
	}
	return func(t string) bool {
		for _, r := range compiled {
			if r.MatchString(t) {
				return true
			}
		}
		return false
	}
}

// TopicRegexps turns AMQP topic patterns into anchored regular expressions over event
// types ("*" is one word, "#" zero or more); all reports a pattern that matches anything.
func TopicRegexps(patterns []string) (res []string, all bool) {
	for _, p := range patterns {
		if p == "#" {
			return nil, true
		}
		var b strings.Builder
		b.WriteString("^")
		for i, w := range strings.Split(p, ".") {
			dot := ""
			if i > 0 {
				dot = `\.`
			}
			switch w {
			case "*":
				b.WriteString(dot + `[^.]+`)
			case "#":
				b.WriteString(`(` + dot + `[^.]+)*`)
			default:
				b.WriteString(dot + regexp.QuoteMeta(w))
			}
		}
		b.WriteString("$")
		res = append(res, b.String())
	}
	return res, false
}
