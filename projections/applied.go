package projections

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
)

// AppliedNotifier tells the queries waiting for a consistency token, in every process,
// that projections committed a batch: a NOTIFY on readmodel.AppliedChannel with their
// names. It is sent after the commit, never inside the batch's transaction (a NOTIFY
// there would take PostgreSQL's global notification lock at every projector's commit),
// by one goroutine that folds every batch committed meanwhile into the next NOTIFY. A
// notification that is lost (the process dies after the commit, the database is down)
// costs a waiter at most its safety poll. A nil *AppliedNotifier sends nothing.
type AppliedNotifier struct {
	pool   *pgxpool.Pool
	logger *slog.Logger

	mu      sync.Mutex
	pending map[string]bool
	kick    chan struct{}
	// local, when set, is told each batch's stream versions at once (SetLocal).
	local atomic.Pointer[func(projection string, versions map[uuid.UUID]int)]
}

// NewAppliedNotifier returns a notifier sending through pool; Run sends.
func NewAppliedNotifier(pool *pgxpool.Pool, logger *slog.Logger) *AppliedNotifier {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &AppliedNotifier{pool: pool, logger: logger, pending: map[string]bool{}, kick: make(chan struct{}, 1)}
}

// Applied records that projections committed a batch, and the work names of the workers
// it wrote rows for (NoteWork); it never blocks. A batch's names are given in one call,
// so that they go out in one notification: given one at a time, Run could send the first
// before the others were recorded, one NOTIFY (and one wake-up of every listener) each.
func (n *AppliedNotifier) Applied(names ...string) {
	if n == nil || len(names) == 0 {
		return
	}
	n.mu.Lock()
	for _, name := range names {
		n.pending[name] = true
	}
	n.mu.Unlock()
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// SetLocal has each committed batch's stream versions, by projection, given to local as
// soon as the batch has committed, before its notification goes out: the consistency
// waits of this process end without the notification's round trips and their check
// (readmodel.Applied.Committed). serve sets it when the reads wait on the database the
// projectors commit to.
func (n *AppliedNotifier) SetLocal(local func(projection string, versions map[uuid.UUID]int)) {
	n.local.Store(&local)
}

// Reached gives local (SetLocal) the versions a batch of projection's left its streams at:
// applied is what it applied, in order. It does nothing without local.
func (n *AppliedNotifier) Reached(projection string, applied []events.Envelope) {
	if n == nil || len(applied) == 0 {
		return
	}
	local := n.local.Load()
	if local == nil {
		return
	}
	versions := make(map[uuid.UUID]int, len(applied))
	for _, e := range applied {
		versions[e.StreamID] = max(versions[e.StreamID], e.StreamVersion)
	}
	(*local)(projection, versions)
}

// workKey is the context key of a batch's work (NoteWork).
type workKey struct{}

// batchWork is the work names a batch's projectors noted, in the order noted.
type batchWork struct{ names []string }

// NoteWork records that the batch being applied with ctx writes rows for the outbox
// worker that waits on name (readmodel.DeliveriesWork, readmodel.EmailsWork): the
// runtime adds name to its notification once the batch has committed. A projector's
// apply calls it beside the write; a batch that fails or rolls back notifies nothing,
// and outside the runtime (a rebuild, a test) it does nothing.
func NoteWork(ctx context.Context, name string) {
	if w, ok := ctx.Value(workKey{}).(*batchWork); ok && !slices.Contains(w.names, name) {
		w.names = append(w.names, name)
	}
}

// withWork returns ctx carrying a fresh record of the work noted in one batch.
func withWork(ctx context.Context) (context.Context, *batchWork) {
	w := &batchWork{}
	return context.WithValue(ctx, workKey{}, w), w
}

// Run sends the notifications until ctx ends.
func (n *AppliedNotifier) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-n.kick:
		}
		n.mu.Lock()
		names := make([]string, 0, len(n.pending))
		for name := range n.pending {
			names = append(names, name)
		}
		clear(n.pending)
		n.mu.Unlock()
		if len(names) == 0 {
			continue
		}
		slices.Sort(names)
		if _, err := n.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, readmodel.AppliedChannel, strings.Join(names, ",")); err != nil && ctx.Err() == nil {
			n.logger.Debug("projection notification not sent: waiters find it by polling", "error", err)
		}
	}
}
