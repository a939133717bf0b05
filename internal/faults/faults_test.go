package faults

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestParse(t *testing.T) {
	env := map[string]string{"CHAOS_CRASH_AT": "relay.batch:3", "CHAOS_DUPLICATE_DELIVERY": "1", "CHAOS_POISON": "chatbots:poison-me"}
	s := parse(func(k string) string { return env[k] })
	assert.Equal(t, "relay.batch", s.crashPoint)
	assert.EqualValues(t, 3, s.crashAfter)
	assert.True(t, s.duplicate)
	assert.True(t, s.poisoned("chatbots", []byte(`{"name":"a poison-me bot"}`)))
	assert.False(t, s.poisoned("audit", []byte(`{"name":"a poison-me bot"}`)), "only the named projector")
	assert.False(t, s.poisoned("chatbots", []byte(`{"name":"a bot"}`)))

	for _, bad := range []map[string]string{{"CHAOS_CRASH_AT": "relay.batch"}, {"CHAOS_CRASH_AT": "relay.batch:0"},
		{"CHAOS_CRASH_AT": "relay.batch:x"}, {"CHAOS_POISON": "chatbots:"}, {"CHAOS_POISON": ":x"}, {"CHAOS_DUPLICATE_DELIVERY": "yes"}} {
		s := parse(func(k string) string { return bad[k] })
		assert.Equal(t, settings{}, s, "%v sets nothing", bad)
	}
}
