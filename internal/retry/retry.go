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

// Hold tries again, pausing with a fresh Backoff, while try fails with an error for
// which again reports true, until done is closed; it returns try's last outcome. It is
// the one hold-while-the-database-is-down of the consumer runtimes: work that fails only
// because a dependency is unavailable did nothing wrong, and counting it as a failure
// would dead-letter it after a long enough outage. waiting, when set, is told of each
// pause before it starts.
func Hold[T any](done <-chan struct{}, again func(error) bool, waiting func(err error, pause time.Duration), try func() (T, error)) (T, error) {
	var b Backoff
	for {
		out, err := try()
		if err == nil || !again(err) {
			return out, err
		}
		d := b.Next()
		if waiting != nil {
			waiting(err, d)
		}
		if !Sleep(done, d) {
			return out, err
		}
	}
}
