package projections

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/db"
)

// Rebuildable is a projector whose read model is a function of the log alone: it writes
// only its own tables, so replaying the log into fresh copies of them rebuilds it.
// (The trainer and the responders are not: they append events.) Its writes are
// pipelined, in rebuilds and in live batches alike (see pipeTx), so its Apply must not
// depend on what an Exec returns; a read (Query, QueryRow) sees every earlier write.
type Rebuildable interface {
	Projector
	// Tables are the tables the projector owns, in the public schema.
	Tables() []string
}

// Tables of the rebuildable projectors.
func (*Accounts) Tables() []string {
	return []string{"organizations", "users", "sessions", "roles", "api_tokens"}
}

func (Chatbots) Tables() []string { return []string{"chatbots", "knowledge_entries"} }

func (Conversations) Tables() []string { return []string{"conversations", "messages"} }

// Progress is where a rebuild is.
type Progress struct {
	Projection string
	Phase      string // "replay", "swap", "done"
	Done       int64  // events replayed
	Total      int64  // events to replay, as counted at the start (more may come)
	Elapsed    time.Duration
}

// Rate is the replay's speed in events per second.
func (p Progress) Rate() float64 {
	if p.Elapsed <= 0 {
		return 0
	}
	return float64(p.Done) / p.Elapsed.Seconds()
}

// Left estimates the time to the end of the replay.
func (p Progress) Left() time.Duration {
	r := p.Rate()
	if r <= 0 || p.Done >= p.Total {
		return 0
	}
	return time.Duration(float64(p.Total-p.Done) / r * float64(time.Second))
}

// Rebuild replays the log into fresh copies of a projector's tables, in a schema of their
// own, and swaps them in atomically. The live projector keeps consuming meanwhile (it
// waits only for the swap's transaction), and queries keep being answered from the live
// tables until the swap commits.
type Rebuild struct {
	Pool      *pgxpool.Pool
	Projector Rebuildable
	BatchSize int
	// Progress, when set, is told after every batch.
	Progress func(Progress)
	// BeforeSwap, when set, runs in the swap's transaction with the rebuilt tables first
	// on the search path (the audit trail drops pruned entries there).
	BeforeSwap func(ctx context.Context, tx pgx.Tx) error
}

// Run rebuilds the projection. A failure at any point leaves the live tables as they
// were; the next run starts over.
func (r *Rebuild) Run(ctx context.Context) error {
	sh, err := r.replay(ctx, "rebuild_")
	if err != nil {
		return err
	}
	defer sh.close(ctx)
	if _, err := sh.conn.Exec(ctx, `ANALYZE `+strings.Join(qualified(sh.quoted, r.Projector.Tables()), ", ")); err != nil {
		return err
	}
	sh.report("swap")
	// The swap waits for the live projector's batch in flight and for queries that are
	// reading the old tables. It gives up after a while rather than queue every new query
	// behind it, and tries again.
	for attempt := 1; ; attempt++ {
		err := r.swap(ctx, sh)
		if err == nil {
			break
		}
		var pgErr *pgconn.PgError
		if attempt < 300 && errors.As(err, &pgErr) && pgErr.Code == "55P03" { // lock_not_available
			time.Sleep(time.Duration(10+rand.IntN(40)) * time.Millisecond)
			continue
		}
		return fmt.Errorf("swap: %w", err)
	}
	sh.report("done")
	return nil
}

// shadow is a replay of the log into fresh copies of a projector's tables, in a schema
// of their own, on a connection of its own (its search path puts the copies first).
type shadow struct {
	conn   *pgx.Conn
	schema string
	quoted string
	rp     *replayer
	cp     eventstore.Checkpoint
	prog   Progress
	size   int
	report func(phase string)
}

func (sh *shadow) close(ctx context.Context) { sh.conn.Close(context.WithoutCancel(ctx)) }

// replay creates the copies in the schema prefix+name and replays the whole log into
// them, under an advisory lock that keeps a second replay of the same kind out.
func (r *Rebuild) replay(ctx context.Context, prefix string) (*shadow, error) {
	p := r.Projector
	name := p.Name()
	sh := &shadow{schema: prefix + p.Name(), rp: &replayer{versions: map[uuid.UUID]int{}}, size: r.BatchSize}
	if sh.size <= 0 {
		sh.size = 5000
	}
	sh.quoted = pgx.Identifier{sh.schema}.Sanitize()
	pc, err := r.Pool.Acquire(ctx)
	if err != nil {
		return nil, db.Classify(err)
	}
	// The search path is session state: the connection never goes back to the pool.
	sh.conn = pc.Hijack()
	ok := false
	defer func() {
		if !ok {
			sh.close(ctx)
		}
	}()
	var got bool
	if err := sh.conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, liveLockKey(prefix+name)).Scan(&got); err != nil {
		return nil, db.Classify(err)
	}
	if !got {
		return nil, fmt.Errorf("a %s of %s is already running", strings.TrimSuffix(prefix, "_"), name)
	}
	if err := createShadow(ctx, sh.conn, sh.quoted, p.Tables()); err != nil {
		return nil, fmt.Errorf("create the new tables: %w", err)
	}
	// Every index is there before the replay: projectors query their own tables (a
	// conversation counts its messages), and without its indexes each such query
	// would scan a growing table.
	if err := createIndexes(ctx, sh.conn, sh.quoted, p.Tables()); err != nil {
		return nil, fmt.Errorf("index the new tables: %w", err)
	}
	if _, err := sh.conn.Exec(ctx, `SET search_path = `+sh.quoted+`, public`); err != nil {
		return nil, err
	}

	filter := eventstore.HistoryFilter{TypePatterns: p.Bindings()}
	start := time.Now()
	sh.prog = Progress{Projection: name, Phase: "replay"}
	if sh.prog.Total, err = eventstore.CountHistory(ctx, sh.conn, filter); err != nil {
		return nil, err
	}
	sh.report = func(phase string) {
		sh.prog.Phase, sh.prog.Elapsed = phase, time.Since(start)
		if r.Progress != nil {
			r.Progress(sh.prog)
		}
	}
	sh.report("replay")
	for b := range r.prefetch(ctx, filter, sh.cp, sh.size) {
		if b.err != nil {
			return nil, b.err
		}
		if err := pgx.BeginFunc(ctx, sh.conn, func(tx pgx.Tx) error { return sh.rp.apply(ctx, tx, p, b.batch) }); err != nil {
			return nil, err
		}
		sh.cp = b.next
		sh.prog.Done += int64(len(b.batch))
		sh.report("replay")
	}
	if err := sh.rp.saveVersions(ctx, sh.conn, sh.schema, name); err != nil {
		return nil, fmt.Errorf("save the stream versions: %w", err)
	}
	ok = true
	return sh, nil
}

// read is one batch of the log and the checkpoint after it.
type read struct {
	batch []events.Envelope
	next  eventstore.Checkpoint
	err   error
}

// prefetch reads the log from cp on a connection of the pool, a batch ahead of the
// replay: the next batch is read and decoded while PostgreSQL writes this one (on two
// cores reading was an eighth of a replay's time). The sequence ends after the last batch
// or an error; stopping early (ctx ending, or the loop left) stops the reader.
func (r *Rebuild) prefetch(ctx context.Context, filter eventstore.HistoryFilter, cp eventstore.Checkpoint, size int) iter.Seq[read] {
	return func(yield func(read) bool) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		reads := make(chan read, 1)
		go func() {
			defer close(reads)
			for {
				batch, next, err := eventstore.ReadHistory(ctx, r.Pool, filter, cp, size)
				if err == nil && len(batch) == 0 {
					return
				}
				select {
				case reads <- read{batch, next, err}:
				case <-ctx.Done():
					return
				}
				if err != nil {
					return
				}
				cp = next
			}
		}()
		for b := range reads {
			if !yield(b) {
				return
			}
		}
		if err := ctx.Err(); err != nil {
			yield(read{err: err})
		}
	}
}

// holdLive begins a transaction on the shadow's connection that holds the live projector
// (it waits for the batch in flight) and, with lockTables, the live tables; then it
// applies to the copies what the log gained since the replay, and runs BeforeSwap: the
// copies and the live tables are then comparable. A failure rolls back every write of
// the transaction, before the catch-up starts or with it as a whole (Run gives up then).
func (r *Rebuild) holdLive(ctx context.Context, sh *shadow, lockTables bool) (pgx.Tx, error) {
	p := r.Projector
	tx, err := sh.conn.Begin(ctx)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (pgx.Tx, error) {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return nil, err
	}
	if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '3s'`); err != nil {
		return fail(err)
	}
	// Waiting here holds nothing that anyone else waits for.
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, liveLockKey(p.Name())); err != nil {
		return fail(err)
	}
	if lockTables {
		// The live tables are taken without waiting: a swap that waited for one table while
		// holding another could deadlock with a query that joins them. When a query is
		// reading one, the swap lets go of everything and Run tries again.
		live := make([]string, len(p.Tables()))
		for i, t := range p.Tables() {
			live[i] = pgx.Identifier{"public", t}.Sanitize()
		}
		if _, err := tx.Exec(ctx, `LOCK TABLE `+strings.Join(live, ", ")+` IN ACCESS EXCLUSIVE MODE NOWAIT`); err != nil {
			return fail(err)
		}
	}
	filter := eventstore.HistoryFilter{TypePatterns: p.Bindings()}
	for {
		batch, next, err := eventstore.ReadHistory(ctx, tx, filter, sh.cp, sh.size)
		if err != nil {
			return fail(err)
		}
		if len(batch) == 0 {
			break
		}
		if err := sh.rp.apply(ctx, tx, p, batch); err != nil {
			return fail(err)
		}
		sh.cp = next
		sh.prog.Done += int64(len(batch))
	}
	if r.BeforeSwap != nil {
		if err := r.BeforeSwap(ctx, tx); err != nil {
			return fail(err)
		}
	}
	return tx, nil
}

func (r *Rebuild) swap(ctx context.Context, sh *shadow) error {
	p := r.Projector
	schema, shadow := sh.schema, sh.quoted
	tx, err := r.holdLive(ctx, sh, true)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	for _, t := range p.Tables() {
		parts, err := partitionsOf(ctx, tx, schema, t)
		if err != nil {
			return err
		}
		live := pgx.Identifier{"public", t}.Sanitize()
		if _, err := tx.Exec(ctx, `DROP TABLE `+live); err != nil {
			return err
		}
		for _, rel := range append([]string{t}, parts...) {
			if _, err := tx.Exec(ctx, `ALTER TABLE `+shadow+`.`+pgx.Identifier{rel}.Sanitize()+` SET SCHEMA public`); err != nil {
				return err
			}
		}
	}
	if _, err := tx.Exec(ctx, `DELETE FROM public.projection_streams WHERE projection = $1`, p.Name()); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO public.projection_streams SELECT * FROM `+shadow+`.projection_streams
		WHERE projection = $1`, p.Name()); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `DROP SCHEMA `+shadow+` CASCADE`); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// createShadow makes empty copies of the tables, with the same columns, defaults,
// checks, partitions and unique keys (under the same names), in a fresh schema; and a
// projection_streams of its own. createIndexes adds the other indexes.
func createShadow(ctx context.Context, conn *pgx.Conn, shadow string, tables []string) error {
	if _, err := conn.Exec(ctx, `SET search_path = ''`); err != nil { // names in catalog output come qualified
		return err
	}
	stmts := []string{`DROP SCHEMA IF EXISTS ` + shadow + ` CASCADE`, `CREATE SCHEMA ` + shadow,
		`CREATE TABLE ` + shadow + `.projection_streams (LIKE public.projection_streams INCLUDING ALL)`}
	for _, t := range tables {
		live := pgx.Identifier{"public", t}.Sanitize()
		dst := shadow + "." + pgx.Identifier{t}.Sanitize()
		var partKey *string
		if err := conn.QueryRow(ctx, `SELECT pg_get_partkeydef($1::regclass)`, live).Scan(&partKey); err != nil {
			return err
		}
		create := `CREATE TABLE ` + dst + ` (LIKE ` + live + ` INCLUDING DEFAULTS INCLUDING CONSTRAINTS
			INCLUDING GENERATED INCLUDING IDENTITY INCLUDING STORAGE INCLUDING COMMENTS)`
		if partKey != nil {
			create += ` PARTITION BY ` + *partKey
		}
		stmts = append(stmts, create)
		rows, err := conn.Query(ctx, `SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i
			JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::regclass ORDER BY c.relname`, live)
		if err != nil {
			return err
		}
		parts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
			var name, bound string
			err := r.Scan(&name, &bound)
			return `CREATE TABLE ` + shadow + `.` + pgx.Identifier{name}.Sanitize() + ` PARTITION OF ` + dst + ` ` + bound, err
		})
		if err != nil {
			return err
		}
		stmts = append(stmts, parts...)
		rows, err = conn.Query(ctx, `SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
			WHERE conrelid = $1::regclass AND contype IN ('p', 'u', 'x') ORDER BY conname`, live)
		if err != nil {
			return err
		}
		keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
			var name, def string
			err := r.Scan(&name, &def)
			return `ALTER TABLE ` + dst + ` ADD CONSTRAINT ` + pgx.Identifier{name}.Sanitize() + ` ` + def, err
		})
		if err != nil {
			return err
		}
		stmts = append(stmts, keys...)
	}
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", strings.Fields(s)[0], err)
		}
	}
	return nil
}

// createIndexes copies the live tables' other indexes, under their own names, onto the
// new tables.
func createIndexes(ctx context.Context, conn *pgx.Conn, shadow string, tables []string) error {
	if _, err := conn.Exec(ctx, `SET search_path = ''`); err != nil { // names in catalog output come qualified
		return err
	}
	for _, t := range tables {
		live := pgx.Identifier{"public", t}.Sanitize()
		rows, err := conn.Query(ctx, `SELECT pg_get_indexdef(i.indexrelid, 0, true) FROM pg_index i
			WHERE i.indrelid = $1::regclass AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
			ORDER BY i.indexrelid`, live)
		if err != nil {
			return err
		}
		defs, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		dst := shadow + "." + pgx.Identifier{t}.Sanitize()
		var name string // as the catalog prints it: quoted only where it must be
		if err := conn.QueryRow(ctx, `SELECT $1::regclass::text`, live).Scan(&name); err != nil {
			return err
		}
		for _, def := range defs {
			// "CREATE INDEX name ON [ONLY] public.t USING ..." → on the copy, partitions too.
			stmt := strings.Replace(def, " ON ONLY "+name+" ", " ON "+dst+" ", 1)
			stmt = strings.Replace(stmt, " ON "+name+" ", " ON "+dst+" ", 1)
			if stmt == def {
				return fmt.Errorf("cannot retarget index definition %q", def)
			}
			if _, err := conn.Exec(ctx, stmt); err != nil {
				return err
			}
		}
	}
	return nil
}

func partitionsOf(ctx context.Context, q eventstore.Querier, schema, table string) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = $1::regclass`, pgx.Identifier{schema, table}.Sanitize())
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// replayer applies the log, read once in commit order, to a rebuild's tables. It keeps
// each stream's version in memory (the rebuild is the only writer of its tables), so it
// needs none of the live runtime's per-stream locking. The order within a stream is
// applyInOrder's, as in the live runtime.
//
// The versions are written once, by saveVersions after the replay, in one COPY sorted by
// stream: an upsert of each batch's streams cost as much as the conversations' rows
// themselves (every message is a stream). After that, each batch (the catch-up before
// the swap) upserts the versions it changed.
type replayer struct {
	versions map[uuid.UUID]int
	saved    bool
}

func (rp *replayer) apply(ctx context.Context, tx pgx.Tx, p Projector, envs []events.Envelope) error {
	pt := &pipeTx{Tx: tx}
	applied, err := applyInOrder(withReplay(ctx), pt, p, envs, rp.versions)
	if err != nil {
		return err
	}
	if !rp.saved {
		return pt.flush(ctx)
	}
	changed := map[uuid.UUID]bool{}
	ids, versions := []uuid.UUID{}, []int32{}
	for _, e := range applied {
		if !changed[e.StreamID] {
			changed[e.StreamID] = true
			ids, versions = append(ids, e.StreamID), append(versions, int32(rp.versions[e.StreamID]))
		}
	}
	if _, err := pt.Exec(ctx, `INSERT INTO projection_streams (projection, stream_id, version)
		SELECT $1, u.s, u.v FROM unnest($2::uuid[], $3::int[]) AS u(s, v)
		ON CONFLICT (projection, stream_id) DO UPDATE SET version = excluded.version`, p.Name(), ids, versions); err != nil {
		return err
	}
	return pt.flush(ctx)
}

// saveVersions writes every stream's version into the shadow's projection_streams,
// which the replay left empty, in key order (the index grows at its right edge).
func (rp *replayer) saveVersions(ctx context.Context, conn *pgx.Conn, schema, projection string) error {
	ids := slices.SortedFunc(maps.Keys(rp.versions), func(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) })
	i := 0
	_, err := conn.CopyFrom(ctx, pgx.Identifier{schema, "projection_streams"},
		[]string{"projection", "stream_id", "version"}, pgx.CopyFromFunc(func() ([]any, error) {
			if i == len(ids) {
				return nil, nil
			}
			id := ids[i]
			i++
			return []any{projection, id, int32(rp.versions[id])}, nil
		}))
	if err == nil {
		rp.saved = true
	}
	return err
}

func qualified(schema string, tables []string) []string {
	out := make([]string, len(tables))
	for i, t := range tables {
		out[i] = schema + "." + pgx.Identifier{t}.Sanitize()
	}
	return out
}
