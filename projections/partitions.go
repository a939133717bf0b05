package projections

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/broker"
	"github.com/chatbotsaas/chatbotd/internal/db"
)

// Partitioning projectors (PROJECTOR_PARTITIONS).
//
// A projector whose queue has a single active consumer is applied by one process at a
// time. Split into N partitions, its events go to N queues by organization (the relay
// stamps each message with its organization's bucket, events.PartitionBucket; queue k
// takes the buckets that are k modulo N), each with a single active consumer, so that N
// processes share the projector and an organization's events keep their order.
//
// The layout (N) of each projector is recorded in projection_layouts; every process
// consumes the recorded layout, whatever its own setting. A process of the projectors role
// whose PROJECTOR_PARTITIONS differs switches it (Switch): the new queues are bound before
// the old ones are unbound, a fence is put at the end of each old queue, and the old
// queues are consumed until every fence is reached; only then are they deleted and the new
// ones consumed. So a switch never reorders an organization's events, and loses none.
//
// Which process consumes which partition: the processes running the projectors role hold
// a session advisory lock each (their membership; a process that dies loses it with its
// connection), and partition k of a projector goes to the member at (k + a per-projector
// offset) modulo the number of members, in the order of their ids. A process that joins
// subscribes to its partitions at once (standing by behind the old owner, since each queue
// has a single active consumer) and the old owner lets go at its next tick. With one
// partition every process subscribes, as without partitions: the first is active and the
// others stand by.

// layoutsLockKey serializes what changes or declares layouts: a declaration that read
// the old layout never binds its queues again after a switch detached them.
var layoutsLockKey = db.LockKey("chatbotd.projection-layouts")

// memberLockClass is the first key of the members' advisory locks (the second is the
// member's id): pg_locks lists the members of the database.
const memberLockClass = 0x43425044

// Layout is projector r's queues for n partitions.
func Layout(r *Runner, n int) broker.Layout { return layoutOf(r.Queue(), n) }

func layoutOf(base broker.QueueSpec, n int) broker.Layout {
	return broker.Layout{Base: base, Partitions: n, Header: events.PartitionHeader, Buckets: events.PartitionBuckets}
}

// Partitionable reports whether r's projector is split when PROJECTOR_PARTITIONS is set:
// every projector whose queue has a single active consumer (the responder's queue takes
// competing consumers already).
func Partitionable(r *Runner) bool { return r.Queue().SingleActiveConsumer }

// layoutRow is a projector's row of projection_layouts.
type layoutRow struct {
	partitions int
	draining   int // 0: none
	drained    []int
}

// consumed is the layout whose queues are consumed now (the old one while it drains) and
// which of its partitions are still to be consumed.
func (l layoutRow) consumed() (n int, parts []int) {
	n = l.partitions
	if l.draining > 0 {
		n = l.draining
	}
	for k := range n {
		if !slices.Contains(l.drained, k) { // drained is empty unless a layout drains
			parts = append(parts, k)
		}
	}
	return n, parts
}

// readLayouts reads every recorded layout; a projector without a row has one partition.
func readLayouts(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}) (map[string]layoutRow, error) {
	rows, err := q.Query(ctx, `SELECT projection, partitions, coalesce(draining, 0), drained FROM projection_layouts`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]layoutRow{}
	for rows.Next() {
		var name string
		var l layoutRow
		var drained []int32
		if err := rows.Scan(&name, &l.partitions, &l.draining, &drained); err != nil {
			return nil, err
		}
		for _, k := range drained {
			l.drained = append(l.drained, int(k))
		}
		out[name] = l
	}
	return out, rows.Err()
}

func rowOf(rows map[string]layoutRow, name string) layoutRow {
	if l, ok := rows[name]; ok {
		return l
	}
	return layoutRow{partitions: 1}
}

// DeclareLayouts declares the recorded layout of each partitionable runner (and the queues
// of a layout being drained: they exist already). The relay calls it before publishing,
// serving before its workers start.
func DeclareLayouts(ctx context.Context, pool *pgxpool.Pool, ch *amqp.Channel, runners []*Runner) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock_shared($1)`, layoutsLockKey); err != nil {
			return err
		}
		rows, err := readLayouts(ctx, tx)
		if err != nil {
			return err
		}
		for _, r := range runners {
			if err := Layout(r, rowOf(rows, r.Name()).partitions).Declare(ch); err != nil {
				return err
			}
		}
		return nil
	})
}

// ErrDraining is Switch's answer while the previous switch's old queues drain.
var ErrDraining = errors.New("the previous layout is still draining")

// Switch makes n the layout of r's projector, if it is not. A projector whose queues were
// never declared takes n at once; otherwise the old layout's queues are detached and
// fenced and drain before the new ones are consumed (see the package comment above). It
// answers ErrDraining while an earlier switch drains: try again later.
//
// n = 0 retires the projector's own queues: a member of the group (Group) whose queues
// an earlier version consumed. They drain as an old layout does, and none replaces them:
// the group's queue, bound before, takes the projector's events.
func Switch(ctx context.Context, pool *pgxpool.Pool, b eventstore.Channeler, r *Runner, n int) (switched bool, err error) {
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, layoutsLockKey); err != nil {
			return err
		}
		rows, err := readLayouts(ctx, tx)
		if err != nil {
			return err
		}
		row, recorded := rows[r.Name()]
		if !recorded {
			row = layoutRow{partitions: 1}
		}
		if row.partitions == n {
			return nil
		}
		if row.draining > 0 {
			return ErrDraining
		}
		ch, err := b.Channel(ctx)
		if err != nil {
			return err
		}
		defer ch.Close()
		old, next := Layout(r, row.partitions), Layout(r, n)
		fresh := false
		if !recorded {
			fresh, err = queueMissing(ctx, b, old.Base.Name)
			if err != nil {
				return err
			}
		}
		if n > 0 {
			if err := next.Declare(ch); err != nil {
				return err
			}
		}
		draining := any(row.partitions)
		if fresh {
			draining = nil // nothing was ever routed to the old layout
		} else {
			if err := old.Detach(ch); err != nil {
				return err
			}
			if err := old.Fence(ch); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO projection_layouts (projection, partitions, draining, drained, changed_at)
			VALUES ($1, $2, $3, '{}', now())
			ON CONFLICT (projection) DO UPDATE SET partitions = $2, draining = $3, drained = '{}', changed_at = now()`,
			r.Name(), n, draining); err != nil {
			return err
		}
		switched = true
		return nil
	})
	return switched, err
}

// queueMissing reports whether queue name does not exist.
func queueMissing(ctx context.Context, b eventstore.Channeler, name string) (bool, error) {
	ch, err := b.Channel(ctx)
	if err != nil {
		return false, err
	}
	defer ch.Close()
	if _, err := ch.QueueDeclarePassive(name, true, false, false, false, nil); err != nil {
		var ae *amqp.Error
		if errors.As(err, &ae) && ae.Code == amqp.NotFound {
			return true, nil
		}
		return false, err
	}
	return false, nil
}

// finishDrain deletes the old layout's queues once every one of them reached its fence,
// and ends the drain. It leaves the drain as it is while a queue still has a consumer
// (another process that has not seen the drain end yet) or messages.
func finishDrain(ctx context.Context, pool *pgxpool.Pool, b eventstore.Channeler, r *Runner) (bool, error) {
	done := false
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, layoutsLockKey); err != nil {
			return err
		}
		rows, err := readLayouts(ctx, tx)
		if err != nil {
			return err
		}
		row := rowOf(rows, r.Name())
		if row.draining == 0 || len(row.drained) < row.draining {
			return nil
		}
		old := Layout(r, row.draining)
		for k := range old.Partitions {
			// A failed delete closes its channel: one channel each.
			ch, err := b.Channel(ctx)
			if err != nil {
				return err
			}
			err = old.Remove(ch, k)
			ch.Close()
			if err != nil {
				return err
			}
		}
		if row.partitions <= 1 && old.Partitions > 1 {
			ch, err := b.Channel(ctx)
			if err != nil {
				return err
			}
			err = ch.ExchangeDelete(old.SplitExchange(), false, false)
			ch.Close()
			if err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `UPDATE projection_layouts SET draining = NULL, drained = '{}', changed_at = now()
			WHERE projection = $1`, r.Name()); err != nil {
			return err
		}
		done = true
		return nil
	})
	return done, err
}

// recordFence records that partition k of the draining layout of n partitions reached its
// fence. A fence of a layout that is not draining (a second fence of a switch that was
// retried) changes nothing. It waits for the switch that published the fence: the fences
// are published inside the switch's transaction, and may be consumed before it commits.
func recordFence(ctx context.Context, pool *pgxpool.Pool, projection, fence string) error {
	n, k, ok := strings.Cut(fence, "/")
	nn, err1 := strconv.Atoi(n)
	kk, err2 := strconv.Atoi(k)
	if !ok || err1 != nil || err2 != nil {
		return fmt.Errorf("malformed fence %q", fence)
	}
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock_shared($1)`, layoutsLockKey); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE projection_layouts SET drained = array_append(drained, $3)
			WHERE projection = $1 AND draining = $2 AND NOT ($3 = ANY (drained))`, projection, nn, kk)
		return err
	})
}

// Partitions runs the partitioned projectors of one process: it keeps the process's
// membership, switches each projector to Partitions when it is not, ends drains, and
// runs a Runner for each partition the process owns.
type Partitions struct {
	Pool   *pgxpool.Pool
	Broker eventstore.Channeler
	// Runners are the partitionable projectors (Partitionable).
	Runners []*Runner
	// Retired are the projectors of the group (Group, one of Runners), each on a runner
	// of its own: their own queues, which an earlier version consumed, are retired
	// (Switch to 0) once the group's layout is settled, and drained. The group's runner
	// consumes only once they are all drained and removed, so that no event of a member
	// is applied before the member's events that waited in its old queue.
	Retired []*Runner
	// Group is the name of the group's runner among Runners: GroupName when empty.
	Group string
	// Partitions is the process's setting, PROJECTOR_PARTITIONS.
	Partitions int
	// Tick is how often membership and layouts are read again (1 s by default): how long
	// a joining process waits for its share, and a layout switch for its next step. A
	// process that dies loses its membership at once.
	Tick   time.Duration
	Logger *slog.Logger
}

// partitionKey names one partition's consumer: projector, layout and partition.
type partitionKey struct {
	name string
	n, k int
}

type running struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// Run runs until ctx ends; then it stops every partition's Runner, which finishes its
// batch (see Runner.Run), and returns.
func (p *Partitions) Run(ctx context.Context) error {
	if p.Tick <= 0 {
		p.Tick = time.Second
	}
	if p.Logger == nil {
		p.Logger = slog.New(slog.DiscardHandler)
	}
	log := p.Logger.With("component", "projector-partitions")
	m := &membership{pool: p.Pool, id: rand.Int32N(math.MaxInt32-1) + 1}
	defer m.drop() // leaves: the lock goes with the connection
	runs := map[partitionKey]running{}
	var wg sync.WaitGroup
	defer func() {
		for _, r := range runs {
			r.cancel()
		}
		wg.Wait()
	}()
	settled := map[string]bool{} // projectors whose layout is Partitions
	for {
		if err := p.tick(ctx, log, m, settled, runs, &wg); err != nil && ctx.Err() == nil {
			log.Warn("partitions: keeping the partitions as they are", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(p.Tick):
		}
	}
}

func (p *Partitions) tick(ctx context.Context, log *slog.Logger, m *membership, settled map[string]bool,
	runs map[partitionKey]running, wg *sync.WaitGroup) error {
	ms, err := m.members(ctx)
	if err != nil {
		return err
	}
	// settle switches r to n partitions, once: a switch that waits for a drain is tried
	// again at the next tick.
	settle := func(r *Runner, n int, done string, attrs ...any) error {
		if settled[r.Name()] {
			return nil
		}
		switched, err := Switch(ctx, p.Pool, p.Broker, r, n)
		switch {
		case errors.Is(err, ErrDraining):
			return nil
		case err != nil:
			return err
		}
		if switched {
			log.Info(done, append([]any{"projector", r.Name()}, attrs...)...)
		}
		settled[r.Name()] = true
		return nil
	}
	for _, r := range p.Runners {
		if err := settle(r, p.Partitions, "projector layout switched", "partitions", p.Partitions); err != nil {
			return err
		}
	}
	group := p.Group
	if group == "" {
		group = GroupName
	}
	for _, r := range p.Retired {
		if !settled[group] {
			break
		}
		if err := settle(r, 0, "projector's own queues retired: its events go to the group's queue", "group", group); err != nil {
			return err
		}
	}
	rows, err := readLayouts(ctx, p.Pool)
	if err != nil {
		return err
	}
	retiring := false
	for _, r := range p.Retired {
		if row := rowOf(rows, r.Name()); row.partitions != 0 || row.draining > 0 {
			retiring = true
		}
	}
	wanted := map[partitionKey]*Runner{}
	for _, r := range append(slices.Clip(p.Runners), p.Retired...) {
		if r.Name() == group && retiring {
			continue // after its members' old queues
		}
		row := rowOf(rows, r.Name())
		if row.draining > 0 && len(row.drained) >= row.draining {
			p.stop(runs, func(key partitionKey) bool { return key.name == r.Name() })
			done, err := finishDrain(ctx, p.Pool, p.Broker, r)
			if err != nil {
				log.Info("old partitions not removed yet", "projector", r.Name(), "error", err)
			}
			if done {
				log.Info("old partitions drained and removed", "projector", r.Name(), "partitions", row.partitions)
				row = layoutRow{partitions: row.partitions}
			} else {
				continue
			}
		}
		n, parts := row.consumed()
		for _, k := range parts {
			if n == 1 || owner(ms, r.Name(), k) == m.id {
				wanted[partitionKey{r.Name(), n, k}] = r
			}
		}
	}
	p.stop(runs, func(key partitionKey) bool { return wanted[key] == nil })
	for key, r := range wanted {
		if _, ok := runs[key]; ok {
			continue
		}
		q := Layout(r, key.n).Queue(key.k)
		rctx, cancel := context.WithCancel(ctx)
		run := running{cancel: cancel, done: make(chan struct{})}
		runs[key] = run
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(run.done)
			_ = r.forQueue(q, key.n, key.k).Run(rctx)
		}()
		log.Debug("partition consumed", "queue", q.Name)
	}
	return nil
}

// stop stops the runs that match, each after its batch.
func (p *Partitions) stop(runs map[partitionKey]running, match func(partitionKey) bool) {
	for key, r := range runs {
		if match(key) {
			r.cancel()
			<-r.done
			delete(runs, key)
		}
	}
}

// PositionsKey is the row of projection_positions that partition k of a layout of n
// partitions advances: the projector's name for one partition, "<name>#p<k>" for more
// (shared by every layout's partition k, so that a switch adds no rows). Status sums a
// projector's rows.
func PositionsKey(name string, n, k int) string {
	if n <= 1 {
		return name
	}
	return name + "#p" + strconv.Itoa(k)
}

// owner is the member that consumes partition k of the named projector: members taken in
// turn from a per-projector offset, so that each member has its share of partitions and
// projectors with fewer partitions than members are spread over them too.
func owner(members []int32, name string, k int) int32 {
	if len(members) == 0 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(name))
	return members[(int(h.Sum32()%uint32(len(members)))+k)%len(members)]
}

// membership is a process's session advisory lock that says it runs projectors.
type membership struct {
	pool *pgxpool.Pool
	id   int32
	conn *pgxpool.Conn
}

// members joins (again, after a lost connection) and lists the members' ids in order.
func (m *membership) members(ctx context.Context) ([]int32, error) {
	if m.conn == nil {
		c, err := m.pool.Acquire(ctx)
		if err != nil {
			return nil, err
		}
		if _, err := c.Exec(ctx, `SELECT pg_advisory_lock($1, $2)`, int32(memberLockClass), m.id); err != nil {
			c.Release()
			return nil, err
		}
		m.conn = c
	}
	rows, err := m.conn.Query(ctx, `SELECT objid::bigint FROM pg_locks
		WHERE locktype = 'advisory' AND objsubid = 2 AND granted AND classid::bigint = $1
			AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
		ORDER BY objid`, int64(memberLockClass))
	if err != nil {
		m.drop()
		return nil, err
	}
	ids, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (int32, error) {
		var id int64
		err := r.Scan(&id)
		return int32(id), err
	})
	if err != nil {
		m.drop()
		return nil, err
	}
	return ids, nil
}

// drop closes the membership's connection (its lock goes with it); the next tick joins
// again.
func (m *membership) drop() {
	if m.conn != nil {
		_ = m.conn.Hijack().Close(context.Background())
		m.conn = nil
	}
}
