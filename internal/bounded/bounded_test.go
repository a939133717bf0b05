package bounded

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestMapStartsAgainWhenFull(t *testing.T) {
	m := New[string, int](3)
	for i, k := range []string{"a", "b", "c"} {
		m.Put(k, i)
	}
	m.Put("b", 10) // an update never empties it
	assert.Equal(t, 3, m.Len())
	v, ok := m.Get("b")
	assert.True(t, ok)
	assert.Equal(t, 10, v)
	m.Put("d", 4) // full: forget everything, then store
	assert.Equal(t, 1, m.Len())
	_, ok = m.Get("a")
	assert.False(t, ok)
	v, _ = m.Get("d")
	assert.Equal(t, 4, v)
}
