package reactors

import (
	"context"
	"log/slog"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatbotsaas/chatbotd/internal/readmodel"
	"github.com/chatbotsaas/chatbotd/internal/retry"
)

// claimTimeout bounds a claim, which shutdown waits for.
const claimTimeout = 10 * time.Second

// outbox is the one runtime of the reactors that work off rows a projector writes
// (webhook deliveries, emails). It is a pipeline over leases:
//
//   - claim leases up to n due rows in one short transaction (SKIP LOCKED, so several
//     processes share the work) and pushes their next attempt past the lease;
//   - up to workers calls run at once, none inside a transaction; a free slot is
//     refilled at once, so a slow receiver holds one slot, never the others;
//   - record stores the outcomes that finished meanwhile in one transaction (sent,
//     retry later, or given up: the rows' dead letters).
//
// Failures follow the queue runtimes' rules: a claim that fails (the database is down)
// is retried with retry.Backoff and nothing is given up; a call still running when ctx
// ends is waited for and not recorded, so its lease expires and the next process makes
// it again (at least once: receivers dedupe by the event id). A claim still running is
// waited for too (at most claimTimeout), and what it leased keeps its lease. When
// nothing is due the loop sleeps until the next scheduled row (nextDue, a query of one
// nullable timestamptz), at most 5 s, or until a batch that wrote it rows commits: it
// learns that from the runtime's notification after the commit, which names its work
// (readmodel.AppliedChannel, projections.NoteWork), never from a NOTIFY inside the
// projector's transaction, which would take PostgreSQL's global notification lock at
// each of its commits.
type outbox[J, O any] struct {
	name    string
	pool    *pgxpool.Pool
	work    string // the work name its projector's batches note (readmodel.DeliveriesWork)
	nextDue string
	workers int
	// hold is how long a claimed row may wait for a free worker and still be called
	// within its lease: the lease less the call's timeout.
	hold   time.Duration
	claim  func(ctx context.Context, n int) ([]J, error)
	call   func(ctx context.Context, job J) O
	record func(ctx context.Context, done []O) error
	every  func(ctx context.Context) error // run at most hourly (housekeeping); may be nil
	logger *slog.Logger
}

// run works until ctx ends and the calls in flight have returned.
//
// Claims and records are batched, and each runs beside the calls, because each is a
// round trip (a record also a commit) that would otherwise be paid per call, with the
// workers idle meanwhile:
//   - a claim runs in a goroutine of its own; the next one starts when fewer than
//     pace.depth rows wait to be called, and leases twice that less those waiting, so
//     the workers never wait for it under load (see pace);
//   - the outcomes that finish while a record commits are recorded together by the
//     next one, also in a goroutine of its own. At most one claim and one record run at
//     a time.
//
// Rows claimed but not yet called when ctx ends keep their leases, which expire, as do
// those of calls cut short: the next process makes them then.
func (o outbox[J, O]) run(ctx context.Context) {
	wake := make(chan struct{}, 1)
	go o.listen(ctx, wake)
	workers := max(o.workers, 1)
	p := pace{workers: workers, hold: o.hold}
	type finished struct {
		out      O
		canceled bool
		took     time.Duration
	}
	type claimResult struct {
		jobs []J
		err  error
		took time.Duration
	}
	results := make(chan finished, workers)
	claims := make(chan claimResult, 1)
	recorded := make(chan struct{}, 1)
	inFlight := 0
	var ready []J // claimed, not called yet
	var outcomes []O
	claiming, recording := false, false
	// more: the last claim found rows, or something may have become due since; a claim
	// that finds none waits for a wake-up, the next due row or a retry.
	more := true
	var retryAt time.Time
	var pause retry.Backoff
	record := func() {
		if recording || len(outcomes) == 0 {
			return
		}
		done := outcomes
		outcomes, recording = nil, true
		go func() {
			if err := o.record(context.WithoutCancel(ctx), done); err != nil {
				o.logger.Warn(o.name+": record failed (the calls are made again when their leases expire)",
					"error", err, "outcomes", len(done))
			}
			recorded <- struct{}{}
		}()
	}
	finish := func(f finished) {
		inFlight--
		if !f.canceled {
			outcomes = append(outcomes, f.out)
			p.call = movingAverage(p.call, f.took)
		}
	}
	var lastEvery time.Time
	for {
		if ctx.Err() != nil {
			// Calls end with ctx; the ones cut short are not recorded, the ones that
			// finished are.
			for inFlight > 0 {
				finish(<-results)
			}
			if claiming {
				<-claims
			}
			if recording {
				<-recorded
				recording = false
			}
			record()
			if recording {
				<-recorded
			}
			return
		}
		if o.every != nil && time.Since(lastEvery) > time.Hour {
			if err := o.every(ctx); err != nil && ctx.Err() == nil {
				o.logger.Warn(o.name+": housekeeping failed", "error", err)
			}
			lastEvery = time.Now()
		}
		if depth := p.depth(); more && !claiming && len(ready) < depth && !time.Now().Before(retryAt) {
			claiming = true
			n := 2*depth - len(ready)
			go func() {
				start := time.Now()
				// Not cut short when ctx ends, but bounded: the database runs a claim it was
				// sent even when the client has given up on it, so a claim cut short could
				// lease rows after run has returned, and they would wait for their lease to
				// run out (the contract test caught a row added after a worker stopped in
				// that state). run waits for it instead; what it leased keeps its lease.
				cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), claimTimeout)
				jobs, err := o.claim(cctx, n)
				cancel()
				claims <- claimResult{jobs: jobs, err: err, took: time.Since(start)}
			}()
		}
		for ; len(ready) > 0 && inFlight < workers; inFlight++ {
			j := ready[0]
			ready = ready[1:]
			go func() {
				start := time.Now()
				out := o.call(ctx, j)
				results <- finished{out: out, canceled: ctx.Err() != nil, took: time.Since(start)}
			}()
		}
		var idle <-chan time.Time
		switch {
		case claiming || len(ready) > 0:
			// A claim's answer or a free slot comes next.
		case !retryAt.IsZero():
			idle = time.After(time.Until(retryAt))
		case !more && inFlight < workers:
			// A free slot: wake for the next retry or lease expiry, even while calls run.
			idle = time.After(o.idleWait(ctx))
		}
		select {
		case <-ctx.Done():
		case <-wake:
			more = true
		case <-idle:
			more, retryAt = true, time.Time{}
		case c := <-claims:
			claiming = false
			if c.err != nil {
				if ctx.Err() == nil {
					wait := pause.Next()
					o.logger.Warn(o.name+": claim failed", "error", c.err, "retry_in", wait)
					retryAt = time.Now().Add(wait)
				}
				continue
			}
			pause.Reset()
			if len(c.jobs) > 0 {
				p.claim = movingAverage(p.claim, c.took)
			}
			ready = append(ready, c.jobs...)
			more = len(c.jobs) > 0
		case <-recorded:
			recording = false
			// What it recorded may let the next rows of their streams be claimed.
			more = true
			record()
		case f := <-results:
			finish(f)
			for drained := false; !drained && inFlight > 0; {
				select {
				case f := <-results:
					finish(f)
				default:
					drained = true
				}
			}
			record()
		}
	}
}

// pace sizes an outbox's claims from how long its calls and its claims take (moving
// averages, zero until measured).
type pace struct {
	workers     int
	hold        time.Duration
	call, claim time.Duration
}

// depth is how many claimed rows to keep waiting for a free worker. Enough for the
// workers to go on calling for two claims' time, so that against a fast receiver they
// never wait for the next claim, and claims are large (a claim's cost is mostly per
// round trip); at least one row a worker and at most eight. But never so many that the
// last of a claim (2 × depth rows waiting) would wait past half of hold for its call:
// against a slow receiver, a row claimed far ahead would see its lease run out before
// its call, and another claim would make the call again. Until both are measured it is
// workers.
func (p pace) depth() int {
	w := p.workers
	if p.call <= 0 || p.claim <= 0 {
		return w
	}
	d := min(max(int(math.Ceil(float64(w)*2*float64(p.claim)/float64(p.call))), w), 8*w)
	if p.hold > 0 {
		d = min(d, int(float64(w)*float64(p.hold)/(4*float64(p.call))))
	}
	return max(d, 1)
}

// movingAverage weighs a new duration a fifth.
func movingAverage(avg, d time.Duration) time.Duration {
	if avg <= 0 {
		return d
	}
	return avg + (d-avg)/5
}

func (o outbox[J, O]) idleWait(ctx context.Context) time.Duration {
	var next *time.Time
	if err := o.pool.QueryRow(ctx, o.nextDue).Scan(&next); err != nil || next == nil {
		return 5 * time.Second
	}
	return min(max(time.Until(*next), 10*time.Millisecond), 5*time.Second)
}

// listen turns the notifications of commits that wrote its work into wake-ups.
func (o outbox[J, O]) listen(ctx context.Context, wake chan<- struct{}) {
	for ctx.Err() == nil {
		err := func() error {
			conn, err := o.pool.Acquire(ctx)
			if err != nil {
				return err
			}
			defer conn.Release()
			if _, err := conn.Exec(ctx, `LISTEN `+readmodel.AppliedChannel); err != nil {
				return err
			}
			defer func() { _, _ = conn.Exec(context.WithoutCancel(ctx), `UNLISTEN *`) }()
			for {
				n, err := conn.Conn().WaitForNotification(ctx)
				if err != nil {
					return err
				}
				if !slices.Contains(strings.Split(n.Payload, ","), o.work) {
					continue
				}
				select {
				case wake <- struct{}{}:
				default:
				}
			}
		}()
		if ctx.Err() == nil {
			o.logger.Debug(o.name+": listen interrupted", "error", err)
			retry.Sleep(ctx.Done(), time.Second)
		}
	}
}
