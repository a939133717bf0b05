// Package bounded is a map for caches whose keys come from outside (tokens, tenants'
// patterns, stream ids): it never holds more than its limit, and when full it starts
// again empty. That is simpler than an LRU and enough where refilling is cheap and a
// full map is rare; a caller who needs recency or expiry should not use it.
package bounded

import "sync"

// Map is safe for concurrent use. The zero value is not usable: make one with New.
type Map[K comparable, V any] struct {
	mu    sync.Mutex
	m     map[K]V
	limit int
}

// New returns a map that holds at most limit entries.
func New[K comparable, V any](limit int) *Map[K, V] {
	return &Map[K, V]{limit: max(limit, 1)}
}

// Get returns the value stored under k, if any.
func (b *Map[K, V]) Get(k K) (V, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	v, ok := b.m[k]
	return v, ok
}

// Put stores v under k, first forgetting everything when the map is full.
func (b *Map[K, V]) Put(k K, v V) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.m[k]; !ok && len(b.m) >= b.limit {
		b.m = nil
	}
	if b.m == nil {
		b.m = make(map[K]V, min(b.limit, 1024))
	}
	b.m[k] = v
}

// Len is how many entries the map holds.
func (b *Map[K, V]) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.m)
}
