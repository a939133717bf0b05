// Package retry is the one backoff of every loop that tries again after a failure: a
// consumer or the relay reconnecting, a batch or a message held while the database is
// down, an outbox worker's step, the broker topology's declaration. Each used to carry
// its own copy of the same doubling pause.
package retry

import "time"

// Backoff is the pause before the next try: First after the first failure, doubling
// after each further one, never more than Max. The zero value pauses 100 ms doubling to
// 5 s. Not safe for concurrent use: one per loop.
type Backoff struct {
	First, Max time.Duration
	next       time.Duration
}

// Next returns the pause before the next try, and doubles the one after it.
func (b *Backoff) Next() time.Duration {
	first, limit := b.First, b.Max
	if first <= 0 {
		first = 100 * time.Millisecond
	}
	if limit <= 0 {
		limit = 5 * time.Second
	}
	if b.next <= 0 {
		b.next = first
	}
	d := min(b.next, limit)
	b.next = min(b.next*2, limit)
	return d
}

// Reset starts the pauses again from First (after a success).
func (b *Backoff) Reset() { b.next = 0 }

// Sleep waits d, or until done is closed; it reports whether the whole pause passed.
func Sleep(done <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return false
	case <-t.C:
		return true
	}
}
