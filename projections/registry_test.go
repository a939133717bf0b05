package projections_test

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/projections"
)

// The registry is the one list of the stream's consumers; what each entry says of its
// part is checked against the part itself.
func TestRegistryDescribesEveryPart(t *testing.T) {
	seen := map[string]bool{}
	streams := map[string]string{}
	for _, part := range projections.Parts() {
		require.False(t, seen[part.Name], "%s is listed twice", part.Name)
		seen[part.Name] = true
		bindings := part.Bindings
		if part.Projector != nil {
			p := part.Projector(projections.Deps{})
			assert.Equal(t, part.Name, p.Name(), "the part's name is its projector's")
			bindings = p.Bindings()
			_, rebuildable := p.(projections.Rebuildable)
			assert.Equal(t, part.Rebuildable, rebuildable, "%s: Rebuildable says what the projector implements", part.Name)
		}
		require.NotEmpty(t, bindings, part.Name)
		assert.False(t, part.Reactor && part.Rebuildable, "%s: a reactor is never replayed", part.Name)
		match := events.TopicMatcher(bindings)
		for _, s := range part.Streams {
			require.Empty(t, streams[s], "stream type %s is served by %s and %s", s, streams[s], part.Name)
			streams[s] = part.Name
			assert.True(t, slices.ContainsFunc(events.Catalog(), func(spec events.Spec) bool {
				return events.StreamTypeOf(spec.Type) == s && match(spec.Type)
			}), "%s waits for %s but receives none of its events", part.Name, s)
		}
	}
	assert.Equal(t, streams, projections.WaitsFor())
	var rebuildable []string
	for _, r := range projections.Rebuildables(projections.Deps{}) {
		rebuildable = append(rebuildable, r.Name())
	}
	assert.Equal(t, []string{"accounts", "chatbots", "conversations", "audit", "analytics"}, rebuildable)
}
