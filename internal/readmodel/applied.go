package readmodel

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/internal/db"
)

// AppliedChannel is the LISTEN/NOTIFY channel on which projector runtimes say, after a
// batch commits, which projections advanced: the payload is their names, separated by
// commas. Queries that wait for a consistency token wake on it instead of polling.
const AppliedChannel = "projection_applied"

// Work names go on AppliedChannel beside the projections' names: a committed batch wrote
// rows for an outbox worker (projections.NoteWork), which wakes on its own work name
// and not on every batch of the projector that writes them. The webhooks projector
// applies every event, and most of its batches write no delivery: waking the deliverer
// for each was a claim and a query at every group batch. A work name is never a
// projection's name.
const (
	DeliveriesWork = "work:webhook_deliveries" // deliveries for the webhook deliverer
	EmailsWork     = "work:emails"             // emails for the mailer
)

// Applied wakes the queries waiting for a projection (WaitApplied) when a projector
// runtime, in any process, says it committed a batch. It keeps a LISTEN connection of
// its own to the primary (a standby cannot LISTEN). While that connection is down, and
// for a nil *Applied, waiters poll with a growing pause (2 to 50 ms) as they did before
// it existed; while it is up, a notification has the versions of every waiting stream
// of its projection read in one query for all of them (check), and each waiter looks
// on its own only every safetyPoll, in case a notification is missed. The zero value is
// not usable: use NewApplied.
type Applied struct {
	// SafetyPoll is how often a waiter looks again while notifications are live (100 ms
	// from NewApplied); set it before the first wait.
	SafetyPoll time.Duration

	config *pgx.ConnConfig
	logger *slog.Logger

	mu   sync.Mutex
	live bool
	// waiting holds the waiters of each projection, by the WaitQuerier they read with.
	waiting map[waitKey]*waiters
}

// WaitQuerier is what waits read with: a pool, a connection or a transaction, which can
// also send a batch (the check's generic plan: appliedVersions).
type WaitQuerier interface {
	Querier
	db.Batcher
}

// waitKey groups waiters that one query can serve. q must be comparable, as pools,
// connections and transactions are (pointers).
type waitKey struct {
	projection string
	q          WaitQuerier
}

// waiters are the waits of one projection and WaitQuerier; checking says a check of them is
// running, again that a notification came meanwhile and they are to be checked once more.
type waiters struct {
	set             map[*waiter]struct{}
	checking, again bool
}

// waiter is one wait while notifications are live: reached is closed once its stream
// is at its version, look when it is to look on its own (the listener went down, or a
// check failed). Either removes it from its waiters.
type waiter struct {
	stream        uuid.UUID
	version       int
	reached, look chan struct{}
}

// safetyPoll is how often a waiter looks again while notifications are live: a
// notification sent after the waiter's first look is never missed (the waiter is
// registered before it looks), so this only covers a standby that lags the notification
// and a notification lost with its connection.
const safetyPoll = 100 * time.Millisecond

// checkTimeout bounds a check's query; its waiters look on their own if it fails.
const checkTimeout = 5 * time.Second

// NewApplied returns an Applied that will listen with config (the primary's); Listen
// starts it.
func NewApplied(config *pgx.ConnConfig, logger *slog.Logger) *Applied {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Applied{SafetyPoll: safetyPoll, config: config, logger: logger, waiting: map[waitKey]*waiters{}}
}

// Live reports whether waits are woken by notifications now (else they poll).
func (a *Applied) Live() bool {
	if a == nil {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.live
}

// Listen keeps the LISTEN connection until ctx ends, connecting again a second after
// a failure.
func (a *Applied) Listen(ctx context.Context) error {
	db.KeepListening(ctx, a.config, AppliedChannel, a.setLive,
		func(payload string) { a.wake(strings.Split(payload, ",")...) },
		func(err error) { a.logger.Warn("consistency waits poll: their LISTEN connection failed", "error", err) })
	return nil
}

func (a *Applied) setLive(live bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.live = live
	if !live { // every waiter goes back to polling
		for key, ws := range a.waiting {
			for w := range ws.set {
				close(w.look)
				delete(ws.set, w)
			}
			delete(a.waiting, key)
		}
	}
}

// wake checks the waiters of the named projections: one query for each projection's
// waiters, however many they are. Checked one at a time by waiter, the versions were a
// query per waiter per batch the projector committed, most of a waiting read's cost
// (BENCHMARKS.md, issue 23's tenth pass).
func (a *Applied) wake(names ...string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for key, ws := range a.waiting {
		if !slices.Contains(names, key.projection) {
			continue
		}
		if ws.checking {
			ws.again = true
			continue
		}
		ws.checking = true
		go a.check(key, ws)
	}
}

// Committed ends, without a query, the waits for projection read with q whose stream is
// in versions at their version or beyond: a projector runtime of this process committed
// a batch that left the streams there (projections.AppliedNotifier.SetLocal). Only for a
// q that reads the database the batch committed to: a replica may not have it yet. The
// notification that the batch sends still comes, for the waits of every process, and
// finds these ended.
func (a *Applied) Committed(q WaitQuerier, projection string, versions map[uuid.UUID]int) {
	if a == nil || len(versions) == 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	key := waitKey{projection: projection, q: q}
	ws, ok := a.waiting[key]
	if !ok {
		return
	}
	for w := range ws.set {
		if v, ok := versions[w.stream]; ok && v >= w.version {
			close(w.reached)
			delete(ws.set, w)
		}
	}
	if len(ws.set) == 0 && !ws.checking {
		delete(a.waiting, key)
	}
}

// check reads the versions of ws's streams, ends the waits that reached theirs, and
// does it again while notifications came meanwhile. A waiter registered during a query
// is not in it, and is checked by the next one, or by its own first look.
func (a *Applied) check(key waitKey, ws *waiters) {
	for {
		a.mu.Lock()
		ws.again = false
		streams := make([]uuid.UUID, 0, len(ws.set))
		for w := range ws.set {
			if !slices.Contains(streams, w.stream) {
				streams = append(streams, w.stream)
			}
		}
		a.mu.Unlock()
		var versions map[uuid.UUID]int
		var err error
		if len(streams) > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
			versions, err = appliedVersions(ctx, key.q, key.projection, streams)
			cancel()
		}
		a.mu.Lock()
		if err != nil {
			a.logger.Debug("consistency waits: a check failed, its waiters look on their own", "error", err)
		}
		for w := range ws.set {
			switch {
			case !slices.Contains(streams, w.stream):
			case err != nil:
				close(w.look)
				delete(ws.set, w)
			case versions[w.stream] >= w.version:
				close(w.reached)
				delete(ws.set, w)
			}
		}
		if !ws.again || a.waiting[key] != ws {
			ws.checking = false
			if len(ws.set) == 0 && a.waiting[key] == ws {
				delete(a.waiting, key)
			}
			a.mu.Unlock()
			return
		}
		a.mu.Unlock()
	}
}

// register adds a wait for projection's stream to reach version, read with q, to those
// the next notification checks; nil while notifications are not live.
func (a *Applied) register(q WaitQuerier, projection string, stream uuid.UUID, version int) *waiter {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.live {
		return nil
	}
	key := waitKey{projection: projection, q: q}
	ws, ok := a.waiting[key]
	if !ok {
		ws = &waiters{set: map[*waiter]struct{}{}}
		a.waiting[key] = ws
	}
	w := &waiter{stream: stream, version: version, reached: make(chan struct{}), look: make(chan struct{})}
	ws.set[w] = struct{}{}
	return w
}

// unregister removes w (nil, or removed already: nothing).
func (a *Applied) unregister(q WaitQuerier, projection string, w *waiter) {
	if w == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	key := waitKey{projection: projection, q: q}
	if ws, ok := a.waiting[key]; ok {
		delete(ws.set, w)
		if len(ws.set) == 0 && !ws.checking {
			delete(a.waiting, key)
		}
	}
}

// WaitApplied waits until projection has applied stream up to version, or ctx ends. It
// reports whether the version was reached. a may be nil: the wait then polls.
func (a *Applied) WaitApplied(ctx context.Context, q WaitQuerier, projection string, stream uuid.UUID, version int) (bool, error) {
	return a.Watch(q, projection, stream, version).Wait(ctx)
}

// Watch is a wait for a projection to apply a stream up to a version, registered before
// its first look at the read model, so that a batch committed after that look wakes it.
// The look is the watch's own (Wait), or the caller's (WaitAfter), made with something
// else in one round trip; a watch not waited for must be stopped (Stop).
type Watch struct {
	a          *Applied
	q          WaitQuerier
	projection string
	stream     uuid.UUID
	version    int
	w          *waiter
}

// Watch registers a wait for projection's stream to reach version, read with q. a may be
// nil: the wait then polls.
func (a *Applied) Watch(q WaitQuerier, projection string, stream uuid.UUID, version int) *Watch {
	return &Watch{a: a, q: q, projection: projection, stream: stream, version: version,
		w: a.register(q, projection, stream, version)}
}

// Stop forgets the watch: the caller's look found the version reached, or the read does
// not wait after all. A nil *Watch: nothing.
func (w *Watch) Stop() {
	if w == nil {
		return
	}
	w.a.unregister(w.q, w.projection, w.w)
	w.w = nil
}

// Wait looks at the read model, then waits until the version is reached or ctx ends. It
// reports whether the version was reached.
func (w *Watch) Wait(ctx context.Context) (bool, error) {
	v, err := AppliedVersion(ctx, w.q, w.projection, w.stream)
	if err != nil {
		w.Stop()
		if ctx.Err() != nil {
			return false, nil
		}
		return false, err
	}
	return w.WaitAfter(ctx, v)
}

// WaitAfter is Wait when the caller has looked already, after Watch: looked is the
// version it found applied.
func (w *Watch) WaitAfter(ctx context.Context, looked int) (bool, error) {
	a := w.a
	delay := 2 * time.Millisecond
	v := looked
	for {
		if v >= w.version {
			w.Stop()
			return true, nil
		}
		pause := delay
		var reached, look <-chan struct{}
		if w.w != nil {
			pause, reached, look = a.SafetyPoll, w.w.reached, w.w.look
		} else {
			delay = min(delay*2, 50*time.Millisecond)
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			w.Stop()
			return false, nil
		case <-reached:
			t.Stop()
			return true, nil
		case <-look:
		case <-t.C:
		}
		t.Stop()
		w.Stop()
		// Registered again before the look, so that a batch committed after the look is
		// checked.
		w.w = a.register(w.q, w.projection, w.stream, w.version)
		var err error
		if v, err = AppliedVersion(ctx, w.q, w.projection, w.stream); err != nil {
			w.Stop()
			if ctx.Err() != nil {
				return false, nil
			}
			return false, err
		}
	}
}
