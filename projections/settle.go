package projections

import (
	"context"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/chatbotsaas/chatbotd/events"
)

// A settlement is what is left of a committed batch: its projectors' after-commit work
// (the caches), the fences it carried, and the acknowledgement of its deliveries.
type settlement struct {
	shares []share
	envs   []events.Envelope
	fences []amqp.Delivery
	good   []amqp.Delivery
	// applied, when known, is what the batch's transaction applied of each share (see
	// AppliedAfterCommitter).
	applied [][]events.Envelope
}

// settler settles committed batches one at a time, in the order they committed, in a
// goroutine of its own, while the consumer applies the next batch. One batch is settled
// while the next one is applied, never more: submit waits for the settler to be free.
//
// Why a stage of its own: a batch's after-commit work (the accounts projector reads its
// rows back and writes them to Redis) otherwise runs while PostgreSQL has nothing of the
// consumer's to do, and the next batch waits for it. Overlapped, the accounts projector
// alone drained a backlog 14% faster on average (BENCHMARKS.md, "Settling a batch while
// the next one is applied").
//
// Order is kept where it matters: a batch's after-commit work runs after every earlier
// batch's, so a cache never gets an older batch's entries after a newer one's; a batch is
// acknowledged after its after-commit work, so a crash before it brings the batch back
// and the work is done then (the runtime skips the events as applied, AfterCommit is
// given them again). A batch applied while the one before it is being settled is
// committed but not yet acknowledged; if the settler fails, neither is acknowledged and
// both come back. The consumer waits for the settler (wait) before anything it settles
// itself: a failed batch applied one event at a time, a batch of fences alone, the end.
type settler struct {
	r    *Runner
	ctx  context.Context
	stop <-chan struct{}
	work chan settlement
	idle sync.WaitGroup // one count per settlement submitted and not yet settled
	mu   sync.Mutex
	err  error // the first failure; nothing is settled after it
	// broken is closed at the first failure: the consumer, which may be waiting for its
	// next delivery, returns then, and its unacknowledged batches come back.
	broken chan struct{}
	done   chan struct{}
}

func newSettler(ctx context.Context, stop <-chan struct{}, r *Runner) *settler {
	s := &settler{r: r, ctx: ctx, stop: stop, work: make(chan settlement),
		broken: make(chan struct{}), done: make(chan struct{})}
	go s.run()
	return s
}

func (s *settler) run() {
	defer close(s.done)
	for b := range s.work {
		if s.failed() == nil {
			if err := s.settle(b); err != nil {
				s.mu.Lock()
				s.err = err
				s.mu.Unlock()
				close(s.broken)
			}
		}
		s.idle.Done()
	}
}

// settle waits for the batch's commit to be on disk (Config.DeferFlush), runs its
// after-commit work, passes its fences, and acknowledges it.
func (s *settler) settle(b settlement) error {
	if err := s.r.durable(s.ctx); err != nil {
		return err
	}
	for i, sh := range b.shares {
		var applied *[]events.Envelope
		if b.applied != nil {
			applied = &b.applied[i]
		}
		if err := s.r.afterCommit(s.ctx, sh.p, pick(b.envs, sh.idx), applied); err != nil {
			return err
		}
	}
	// A fence comes after every event of its queue: recorded once they are applied, and
	// before the acknowledgement of the batch, which covers it.
	if err := s.r.passFences(s.ctx, s.stop, b.fences); err != nil {
		return err
	}
	return ackAll(b.good)
}

// submit hands a committed batch to the settler, once it is done with the one before. It
// returns the settler's failure instead, if it had one: the batch is then left
// unacknowledged.
func (s *settler) submit(b settlement) error {
	if err := s.failed(); err != nil {
		return err
	}
	s.idle.Add(1)
	s.work <- b
	return nil
}

// wait returns once every submitted batch is settled, with the first failure.
func (s *settler) wait() error {
	s.idle.Wait()
	return s.failed()
}

// close waits for the batch being settled and ends the settler.
func (s *settler) close() {
	close(s.work)
	<-s.done
}

func (s *settler) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}
