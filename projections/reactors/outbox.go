package reactors

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatbotsaas/chatbotd/internal/readmodel"
	"github.com/chatbotsaas/chatbotd/internal/retry"
)

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
// it again (at least once: receivers dedupe by the event id). When nothing is due the
// loop sleeps until the next scheduled row (nextDue, a query of one nullable
// timestamptz), at most 5 s, or until the projector named projection commits a batch:
// it learns that from the runtime's notification after the commit
// (readmodel.AppliedChannel), never from a NOTIFY inside the projector's transaction,
// which would take PostgreSQL's global notification lock at each of its commits.
type outbox[J, O any] struct {
	name       string
	pool       *pgxpool.Pool
	projection string
	nextDue    string
	workers    int
	claim      func(ctx context.Context, n int) ([]J, error)
	call       func(ctx context.Context, job J) O
	record     func(ctx context.Context, done []O) error
	every      func(ctx context.Context) error // run at most hourly (housekeeping); may be nil
	logger     *slog.Logger
}

// run works until ctx ends and the calls in flight have returned.
func (o outbox[J, O]) run(ctx context.Context) {
	wake := make(chan struct{}, 1)
	go o.listen(ctx, wake)
	workers := max(o.workers, 1)
	type finished struct {
		out      O
		canceled bool
	}
	results := make(chan finished, workers)
	inFlight := 0
	var lastEvery time.Time
	var pause retry.Backoff
	for {
		if ctx.Err() != nil {
			for ; inFlight > 0; inFlight-- {
				<-results // calls end with ctx; their leases expire and they are made again
			}
			return
		}
		if o.every != nil && time.Since(lastEvery) > time.Hour {
			if err := o.every(ctx); err != nil && ctx.Err() == nil {
				o.logger.Warn(o.name+": housekeeping failed", "error", err)
			}
			lastEvery = time.Now()
		}
		claimed := 0
		if free := workers - inFlight; free > 0 {
			jobs, err := o.claim(ctx, free)
			if err != nil {
				if ctx.Err() == nil {
					wait := pause.Next()
					o.logger.Warn(o.name+": claim failed", "error", err, "retry_in", wait)
					retry.Sleep(ctx.Done(), wait)
				}
				continue
			}
			pause.Reset()
			for _, j := range jobs {
				go func() {
					out := o.call(ctx, j)
					results <- finished{out: out, canceled: ctx.Err() != nil}
				}()
			}
			claimed, inFlight = len(jobs), inFlight+len(jobs)
		}
		var idle <-chan time.Time
		switch {
		case claimed > 0 && inFlight < workers:
			idle = time.After(0) // more may be due: claim again at once
		case inFlight < workers:
			// A free slot: wake for the next retry or lease expiry, even while calls run.
			idle = time.After(o.idleWait(ctx))
		}
		select {
		case <-ctx.Done():
		case <-wake:
		case <-idle:
		case r := <-results:
			batch := []finished{r}
			for len(batch) < inFlight {
				select {
				case r := <-results:
					batch = append(batch, r)
					continue
				default:
				}
				break
			}
			inFlight -= len(batch)
			done := make([]O, 0, len(batch))
			for _, f := range batch {
				if !f.canceled {
					done = append(done, f.out)
				}
			}
			if len(done) == 0 {
				continue
			}
			if err := o.record(context.WithoutCancel(ctx), done); err != nil {
				o.logger.Warn(o.name+": record failed (the calls are made again when their leases expire)",
					"error", err, "outcomes", len(done))
			}
		}
	}
}

func (o outbox[J, O]) idleWait(ctx context.Context) time.Duration {
	var next *time.Time
	if err := o.pool.QueryRow(ctx, o.nextDue).Scan(&next); err != nil || next == nil {
		return 5 * time.Second
	}
	return min(max(time.Until(*next), 10*time.Millisecond), 5*time.Second)
}

// listen turns the notifications of the projector's commits into wake-ups.
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
				if !slices.Contains(strings.Split(n.Payload, ","), o.projection) {
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
