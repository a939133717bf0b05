package readmodel

import (
	"context"
	"log/slog"
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

// Applied wakes the queries waiting for a projection (WaitApplied) when a projector
// runtime, in any process, says it committed a batch. It keeps a LISTEN connection of
// its own to the primary (a standby cannot LISTEN). While that connection is down, and
// for a nil *Applied, waiters poll with a growing pause (2 to 50 ms) as they did before
// it existed; while it is up, they wake on the notification and poll only every
// safetyPoll, in case a notification is missed. The zero value is not usable: use
// NewApplied.
type Applied struct {
	// SafetyPoll is how often a waiter looks again while notifications are live (100 ms
	// from NewApplied); set it before the first wait.
	SafetyPoll time.Duration

	config *pgx.ConnConfig
	logger *slog.Logger

	mu   sync.Mutex
	live bool
	// waiting holds, per projection, a channel closed at its next notification (made
	// when a waiter first asks for it).
	waiting map[string]chan struct{}
}

// safetyPoll is how often a waiter looks again while notifications are live: a
// notification sent before the waiter's first look is never missed (the waiter takes its
// channel before it looks), so this only covers a standby that lags the notification
// and a notification lost with its connection.
const safetyPoll = 100 * time.Millisecond

// NewApplied returns an Applied that will listen with config (the primary's); Listen
// starts it.
func NewApplied(config *pgx.ConnConfig, logger *slog.Logger) *Applied {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Applied{SafetyPoll: safetyPoll, config: config, logger: logger, waiting: map[string]chan struct{}{}}
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
		for name, ch := range a.waiting {
			close(ch)
			delete(a.waiting, name)
		}
	}
}

// wake wakes the waiters of the named projections.
func (a *Applied) wake(names ...string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, name := range names {
		if ch, ok := a.waiting[name]; ok {
			close(ch)
			delete(a.waiting, name)
		}
	}
}

// next is the channel closed at projection's next notification, or nil while
// notifications are not live.
func (a *Applied) next(projection string) <-chan struct{} {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.live {
		return nil
	}
	ch, ok := a.waiting[projection]
	if !ok {
		ch = make(chan struct{})
		a.waiting[projection] = ch
	}
	return ch
}

// WaitApplied waits until projection has applied stream up to version, or ctx ends. It
// reports whether the version was reached. a may be nil: the wait then polls.
func (a *Applied) WaitApplied(ctx context.Context, q Querier, projection string, stream uuid.UUID, version int) (bool, error) {
	delay := 2 * time.Millisecond
	for {
		// Taken before the look, so that a batch committed after the look wakes it.
		woken := a.next(projection)
		v, err := AppliedVersion(ctx, q, projection, stream)
		if err != nil {
			if ctx.Err() != nil {
				return false, nil
			}
			return false, err
		}
		if v >= version {
			return true, nil
		}
		pause := delay
		if woken != nil {
			pause = a.SafetyPoll
		} else {
			delay = min(delay*2, 50*time.Millisecond)
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return false, nil
		case <-woken:
		case <-t.C:
		}
		t.Stop()
	}
}
