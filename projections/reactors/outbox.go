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

// outboxLoop drives a worker over a table of due rows that a projector writes (webhook
// deliveries, emails): step works off what is due now; when nothing is, the loop sleeps
// until the next scheduled row (nextDue, a query of one nullable timestamptz), at most
// 5 s, or until the projector named projection commits a batch. It learns that from
// the runtime's notification after the commit (readmodel.AppliedChannel, see
// AppliedNotifier), never from a NOTIFY inside the projector's transaction, which would
// take PostgreSQL's global notification lock at each of its commits.
type outboxLoop struct {
	pool       *pgxpool.Pool
	projection string
	nextDue    string
	step       func(context.Context) (int, error)
	every      func(context.Context) // run at most hourly (housekeeping); may be nil
	logger     *slog.Logger
}

func (l outboxLoop) run(ctx context.Context) {
	wake := make(chan struct{}, 1)
	go l.listen(ctx, wake)
	var lastEvery time.Time
	var pause retry.Backoff
	for ctx.Err() == nil {
		if l.every != nil && time.Since(lastEvery) > time.Hour {
			l.every(ctx)
			lastEvery = time.Now()
		}
		n, err := l.step(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			d := pause.Next()
			l.logger.Warn("step failed", "error", err, "retry_in", d)
			retry.Sleep(ctx.Done(), d)
			continue
		}
		pause.Reset()
		if n > 0 {
			continue
		}
		select {
		case <-ctx.Done():
		case <-wake:
		case <-time.After(l.idleWait(ctx)):
		}
	}
}

func (l outboxLoop) idleWait(ctx context.Context) time.Duration {
	var next *time.Time
	if err := l.pool.QueryRow(ctx, l.nextDue).Scan(&next); err != nil || next == nil {
		return 5 * time.Second
	}
	return min(max(time.Until(*next), 10*time.Millisecond), 5*time.Second)
}

// listen turns the notifications of the projector's commits into wake-ups.
func (l outboxLoop) listen(ctx context.Context, wake chan<- struct{}) {
	for ctx.Err() == nil {
		err := func() error {
			conn, err := l.pool.Acquire(ctx)
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
				if !slices.Contains(strings.Split(n.Payload, ","), l.projection) {
					continue
				}
				select {
				case wake <- struct{}{}:
				default:
				}
			}
		}()
		if ctx.Err() == nil {
			l.logger.Debug("listen interrupted", "error", err)
			retry.Sleep(ctx.Done(), time.Second)
		}
	}
}
