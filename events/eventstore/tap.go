package eventstore

import (
	"sync"

	"github.com/chatbotsaas/chatbotd/events"
)

// Tap hands the batches the relay reads in commit order to the chainer of the same
// process (RelayConfig.Tap, Chainer.Tap), which then links them without reading the log a
// second time: the chainer's read was half of the log's reads in commit order, each event
// scanned twice by PostgreSQL and by this process.
//
// A batch read after a checkpoint is the whole of the log from there to its last event,
// and stays so: every event in it is older than every transaction that may still append
// (readable), so none can join it later. The chainer may therefore take, from wherever
// its own checkpoint is, the rest of the batch that holds it and the batches that follow.
// A batch that does not follow the one before (the relay started again from its
// checkpoint, or took the lead afresh) starts the tap over. When the chainer's checkpoint
// is not in the tap (it started first, fell behind by more than the tap holds, or the
// relay leads in another process) it reads the log itself, as without a tap.
//
// A nil *Tap holds nothing. Safe for concurrent use.
type Tap struct {
	mu       sync.Mutex
	segments []segment // in commit order, each beginning where the one before ends
	held     int       // events in segments
}

// tapHolds is the most events a tap keeps: the oldest batches are let go beyond it (a
// few MB). The chainer takes what the relay read at least every 200 ms while it keeps up;
// at 5,000 events a second, a fifth of this.
const tapHolds = 5000

// segment is one batch the relay read: the events after from, up to and including next's.
type segment struct {
	from, next Checkpoint
	events     []events.Envelope
}

// before reports whether c comes before o in commit order.
func (c Checkpoint) before(o Checkpoint) bool {
	return c.TransactionID < o.TransactionID || c.TransactionID == o.TransactionID && c.Position < o.Position
}

// offer keeps batch, the events read after from, up to next. The caller must not change
// batch afterwards.
func (t *Tap) offer(from, next Checkpoint, batch []events.Envelope) {
	if t == nil || len(batch) == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := len(t.segments); n > 0 && t.segments[n-1].next != from {
		t.segments, t.held = nil, 0
	}
	t.segments = append(t.segments, segment{from: from, next: next, events: batch})
	t.held += len(batch)
	for t.held > tapHolds && len(t.segments) > 1 {
		t.held -= len(t.segments[0].events)
		t.segments[0] = segment{}
		t.segments = t.segments[1:]
	}
}

// take returns the events after cp that the tap holds, whole batches until there are at
// least limit, and the checkpoint of the last one; ok is false when the tap does not hold
// the event after cp (the caller reads the log). The batches before cp are let go: the
// chainer's checkpoint only moves forward.
func (t *Tap) take(cp Checkpoint, limit int) (batch []events.Envelope, next Checkpoint, ok bool) {
	if t == nil {
		return nil, cp, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for len(t.segments) > 0 && !cp.before(t.segments[0].next) {
		t.held -= len(t.segments[0].events)
		t.segments[0] = segment{}
		t.segments = t.segments[1:]
	}
	if len(t.segments) == 0 || cp.before(t.segments[0].from) {
		return nil, cp, false
	}
	first := t.segments[0]
	start := 0
	if first.from != cp {
		// cp is the checkpoint of an event of this batch (the chainer read part of it
		// itself): the rest follows that event.
		start = -1
		for i, e := range first.events {
			if e.Position == cp.Position {
				start = i + 1
				break
			}
		}
		if start < 0 {
			return nil, cp, false
		}
	}
	batch = append(batch, first.events[start:]...)
	next = first.next
	for _, s := range t.segments[1:] {
		if len(batch) >= limit {
			break
		}
		batch = append(batch, s.events...)
		next = s.next
	}
	return batch, next, true
}
