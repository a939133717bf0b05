package events_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/chatbotsaas/chatbotd/events"
)

// Patterns match as RabbitMQ routes: "*" is one word, "#" any number.
func TestTopicMatcherRoutesLikeRabbitMQ(t *testing.T) {
	for _, c := range []struct {
		patterns []string
		match    []string
		miss     []string
	}{
		{[]string{"conversation.*"}, []string{"conversation.started"}, []string{"message.posted", "conversation", "conversation.a.b"}},
		{[]string{"message.#"}, []string{"message.posted", "message.replied", "message"}, []string{"messages.posted"}},
		{[]string{"#"}, []string{"user.created", "x"}, nil},
		{[]string{"user.created", "*.deleted"}, []string{"user.created", "chatbot.deleted"}, []string{"user.updated", "user_created"}},
	} {
		m := events.TopicMatcher(c.patterns)
		for _, s := range c.match {
			assert.True(t, m(s), "%v should match %s", c.patterns, s)
		}
		for _, s := range c.miss {
			assert.False(t, m(s), "%v should not match %s", c.patterns, s)
		}
	}
	for _, ok := range []string{"user.*", "#", "message.#", "a_b.c1"} {
		assert.NoError(t, events.CheckTopicPattern(ok), ok)
	}
	for _, bad := range []string{"", "user.", ".user", "user..created", "User.created", "user.**", "user.cre*", "a b"} {
		assert.Error(t, events.CheckTopicPattern(bad), bad)
	}
}
