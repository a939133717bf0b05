package projections

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
)

// Tenants choose subscription patterns: however many distinct sets pass through, the
// compiled-matcher cache stays bounded, and a matcher still matches after a reset.
func TestTopicMatcherCacheIsBounded(t *testing.T) {
	for i := range 3 * maxMatchers {
		m := topicMatcher([]string{fmt.Sprintf("user.%d", i), "chatbot.*"})
		assert.True(t, m("chatbot.created"))
		n := matchers.Len()
		if n > maxMatchers {
			t.Fatalf("after %d distinct pattern sets the cache holds %d (bound %d)", i+1, n, maxMatchers)
		}
	}
	assert.True(t, topicMatcher([]string{"user.7"})("user.7"))
	assert.False(t, topicMatcher([]string{"user.7"})("user.8"))
}
