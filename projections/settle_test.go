package projections_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// cacher is a member whose after-commit work (its cache) is held at its first call until
// release, and then fails.
type cacher struct {
	member  // its mu guards calls too
	calls   *[][]uuid.UUID
	entered chan struct{}
	release chan struct{}
}

func (c cacher) AfterCommit(_ context.Context, batch []events.Envelope) error {
	ids := make([]uuid.UUID, len(batch))
	for i, e := range batch {
		ids[i] = e.ID
	}
	c.mu.Lock()
	*c.calls = append(*c.calls, ids)
	first := len(*c.calls) == 1
	c.mu.Unlock()
	if !first {
		return nil
	}
	close(c.entered)
	<-c.release
	return errors.New("the cache went away")
}

func (c cacher) after() [][]uuid.UUID {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(*c.calls)
}

// A committed batch is settled (its after-commit work, then its acknowledgement) while the
// next batch is applied, and never acknowledged before its after-commit work succeeded:
// when that work fails, the batch and the one applied meanwhile come back, each event is
// applied once, and the after-commit work is done for both.
func TestRunnerAppliesTheNextBatchWhileItSettlesOne(t *testing.T) {
	env := newGroupEnv(t)
	c := cacher{member: env.member("settle", "settle.*"), calls: &[][]uuid.UUID{},
		entered: make(chan struct{}), release: make(chan struct{})}
	queue := env.a.Queue("settle")
	// The two events published after the first batch must make one batch: with the
	// default 2 ms linger, a busy machine (make test) delivered them further apart, and
	// the second waited, as it should, behind the first's settlement.
	stop := run(env.runnerLingering(c, 500*time.Millisecond).Run)
	var released sync.Once
	release := func() { released.Do(func() { close(c.release) }) }
	defer func() { release(); stop() }() // a runner stops after the work in hand
	env.a.WaitConsumer(queue)

	first := env.publish("settle.first")
	select {
	case <-c.entered:
	case <-time.After(15 * time.Second):
		t.Fatal("the first batch's after-commit work never started")
	}
	second := []uuid.UUID{env.publish("settle.second"), env.publish("settle.second")}
	testenv.Eventually(t, 15*time.Second, func() error {
		applied, _ := c.seen()
		for _, id := range second {
			if !slices.Contains(applied, id) {
				return fmt.Errorf("%s not applied while the first batch is settled", id)
			}
		}
		return nil
	})
	assert.Len(t, c.after(), 1, "the second batch's after-commit work waits for the first's")
	release()

	all := append([]uuid.UUID{first}, second...)
	testenv.Eventually(t, 30*time.Second, func() error {
		var done []uuid.UUID
		for _, ids := range c.after()[1:] {
			done = append(done, ids...)
		}
		return settledAgain(env, queue, all, done)
	})
	assert.Equal(t, []uuid.UUID{first}, c.after()[0])
	applied, _ := c.seen()
	assert.ElementsMatch(t, all, applied, "each event applied once, the redelivered ones skipped")
	n, _ := env.depth(queue + ".dead")
	assert.Zero(t, n)
}

// settledAgain says whether each of ids is in done (the events given to after-commit
// work since it first failed) and queue is empty.
func settledAgain(env *groupEnv, queue string, ids, done []uuid.UUID) error {
	for _, id := range ids {
		if !slices.Contains(done, id) {
			return fmt.Errorf("%s: no after-commit work since the failure", id)
		}
	}
	if n, _ := env.depth(queue); n != 0 {
		return fmt.Errorf("%d messages in the queue", n)
	}
	return nil
}

// appliedCacher is a member that records, at each after-commit call, the events
// delivered and those the committed transaction applied; its first call fails.
type appliedCacher struct {
	member
	calls *[]appliedCall
}

type appliedCall struct{ delivered, applied []uuid.UUID }

func (appliedCacher) AfterCommit(context.Context, []events.Envelope) error {
	return errors.New("AfterApplied is called after a batch committed whole")
}

func (c appliedCacher) AfterApplied(_ context.Context, batch, applied []events.Envelope) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	*c.calls = append(*c.calls, appliedCall{eventIDs(batch), eventIDs(applied)})
	if len(*c.calls) == 1 {
		return errors.New("the cache went away")
	}
	return nil
}

func (c appliedCacher) after() []appliedCall {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(*c.calls)
}

// The after-commit work of a batch committed whole is told which of its events the
// transaction applied: all of them the first time; when that work fails and the batch
// comes back, none (they were applied before and are skipped), so what they wrote is
// read back rather than taken from the events.
func TestAfterCommitIsToldWhatTheBatchApplied(t *testing.T) {
	env := newGroupEnv(t)
	c := appliedCacher{member: env.member("told", "told.*"), calls: &[]appliedCall{}}
	queue := env.a.Queue("told")
	stop := run(env.runnerLingering(c, 200*time.Millisecond).Run)
	defer stop()
	env.a.WaitConsumer(queue)

	sent := []uuid.UUID{env.publish("told.one"), env.publish("told.two")}
	testenv.Eventually(t, 30*time.Second, func() error {
		calls := c.after()
		if len(calls) < 2 {
			return errors.New("no after-commit work since the failure")
		}
		var done []uuid.UUID
		for _, call := range calls[1:] {
			done = append(done, call.delivered...)
		}
		return settledAgain(env, queue, sent, done)
	})
	calls := c.after()
	assert.Equal(t, calls[0].delivered, calls[0].applied, "the first batch applied all it delivered")
	for _, call := range calls[1:] {
		for _, id := range call.delivered {
			if slices.Contains(calls[0].delivered, id) {
				assert.NotContains(t, call.applied, id, "an event applied before is delivered again, not applied")
			}
		}
	}
	applied, _ := c.seen()
	assert.ElementsMatch(t, sent, applied, "each event applied once")
}
