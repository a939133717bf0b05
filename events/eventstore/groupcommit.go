package eventstore

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/db"
)

// Group commit. Concurrent appends of one stream each, at an exact expected version and
// with no side rows (most commands: messages, chatbots, knowledge, conversations), are
// coalesced into one statement: it reads the streams' versions and inserts every event
// whose append's version holds, in one round trip, one commit and one WAL flush. Each append keeps its own expected-version check and its own
// result: one that fails its check leaves the group and is decided again on its own (a
// CONFLICT, or the result of an idempotent retry), the others commit.
//
// Why it keeps the relay's per-stream order: the versions are read by the statement's
// snapshot, taken before its INSERT takes the transaction id, so every event it saw was
// committed by a transaction with a smaller id. An event of one of the streams committed
// after that snapshot holds the version the group wants, and the INSERT fails on the
// unique (stream_id, stream_version) index; nothing of the group is written, and every
// append in it is done on its own. Nothing is ever written at a version it did not check.
//
// An append alone (no other append in flight) takes the one-statement path at once, so
// one writer pays nothing for this.

// maxGroup bounds the appends of one group.
const maxGroup = 256

// groupCommitters is how many groups may be in flight at once: while one waits for its
// flush, the next one fills. More committers make smaller groups: with 4, appends from
// 32 writers were mostly taken one at a time and grouping gained nothing; with 2 they
// come in groups of about 8 and appends run at 1.4× pgbench's one-row transactions
// (BENCHMARKS.md).
const groupCommitters = 2

type groupedAppend struct {
	req  AppendRequest
	enc  encoded
	meta []byte
	at   time.Time
	done chan groupResult
}

type groupResult struct {
	res events.AppendResult
	err error
	// alone asks the caller to append on its own (it failed its check in the group, or
	// the group failed for a reason that may be another append's).
	alone bool
}

// grouped tries to append req in a group; ok is false when it must be done alone.
func (s *Store) grouped(ctx context.Context, req AppendRequest) (events.AppendResult, bool, error) {
	enc, err := encodeEvents(req)
	if err != nil {
		return events.AppendResult{}, true, err
	}
	meta, err := events.EncodeMetadata(req.Meta.Metadata)
	if err != nil {
		return events.AppendResult{}, true, err
	}
	g := &groupedAppend{req: req, enc: enc, meta: meta, at: s.now(), done: make(chan groupResult, 1)}
	s.startGroups()
	select {
	case s.groups <- g:
	case <-s.stopped:
		return events.AppendResult{}, false, nil
	case <-ctx.Done():
		return events.AppendResult{}, true, ctx.Err()
	}
	// Once handed over, the append's fate is the group's: wait for it whatever ctx says,
	// so that an answer never contradicts what was committed.
	r := <-g.done
	if r.alone {
		return events.AppendResult{}, false, nil
	}
	return r.res, true, r.err
}

func (s *Store) startGroups() {
	s.groupOnce.Do(func() {
		for range groupCommitters {
			go s.committer()
		}
	})
}

// committer takes an append, every other one waiting at that moment (up to maxGroup),
// and commits them together; a group of one too, since the appends that arrive while it
// is committed wait for the next group instead of each taking a connection.
func (s *Store) committer() {
	for {
		var first *groupedAppend
		select {
		case <-s.stopped:
			return
		case first = <-s.groups:
		}
		batch := []*groupedAppend{first}
	fill:
		for len(batch) < maxGroup {
			select {
			case g := <-s.groups:
				batch = append(batch, g)
			default:
				break fill
			}
		}
		s.commitGroup(batch)
	}
}

func (s *Store) commitGroup(batch []*groupedAppend) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	results, err := s.insertGroup(ctx, batch)
	if err != nil {
		for _, g := range batch {
			if db.IsUnavailable(err) {
				g.done <- groupResult{err: db.Classify(err)}
			} else {
				g.done <- groupResult{alone: true} // decided again on its own
			}
		}
		return
	}
	s.notify()
	for i, g := range batch {
		if results[i].alone {
			g.done <- results[i]
			continue
		}
		s.appended(g.req)
		g.done <- results[i]
	}
}

// insertGroup appends the group in one statement (its own transaction: one round trip,
// one commit). It returns a result per append: committed, or alone (its expected version
// did not hold, or its stream is in the group already).
func (s *Store) insertGroup(ctx context.Context, batch []*groupedAppend) ([]groupResult, error) {
	results := make([]groupResult, len(batch))
	var (
		ids, streamIDs                      []uuid.UUID
		streamTypes, types, datas, metas    []string
		versions, schemas                   []int32
		orgs, actorIDs                      []*uuid.UUID
		actorTypes, corrs, causes, requests []string
		times                               []time.Time
		checkStreams                        []uuid.UUID
		checkVersions                       []int32
	)
	owner := map[uuid.UUID]int{} // the batch index of each event
	seen := map[uuid.UUID]bool{}
	for i, g := range batch {
		r := g.req
		if seen[r.StreamID] {
			results[i] = groupResult{alone: true} // one append per stream and group
			continue
		}
		seen[r.StreamID] = true
		checkStreams = append(checkStreams, r.StreamID)
		checkVersions = append(checkVersions, int32(r.ExpectedVersion))
		for k := range g.enc.ids {
			ids = append(ids, g.enc.ids[k])
			streamTypes = append(streamTypes, r.StreamType)
			streamIDs = append(streamIDs, r.StreamID)
			versions = append(versions, int32(r.ExpectedVersion+1+k))
			types = append(types, g.enc.types[k])
			schemas = append(schemas, g.enc.schemas[k])
			datas = append(datas, g.enc.datas[k])
			orgs = append(orgs, r.OrganizationID)
			actorTypes = append(actorTypes, r.Meta.Actor.Type)
			actorIDs = append(actorIDs, r.Meta.Actor.ID)
			corrs = append(corrs, r.Meta.CorrelationID)
			causes = append(causes, r.Meta.CausationID)
			requests = append(requests, r.Meta.RequestID)
			metas = append(metas, string(g.meta))
			times = append(times, g.at)
			owner[g.enc.ids[k]] = i
		}
		// Until the insert says otherwise, the append did not happen.
		results[i] = groupResult{alone: true, res: events.AppendResult{StreamType: r.StreamType, StreamID: r.StreamID,
			Version: r.ExpectedVersion + len(g.enc.ids), OccurredAt: g.at}}
	}
	// The streams' versions are read by the statement's snapshot, before its INSERT takes
	// the transaction id; only the appends whose expected version holds are inserted, in
	// the group's order (WITH ORDINALITY), so positions follow it.
	//
	// The statement runs on its generic plan, set for its transaction alone
	// (db.QueryGeneric: one round trip and one implicit transaction; the setting takes no
	// transaction id). Left to choose, PostgreSQL planned it anew at every call: its
	// generic plan, costed for arrays of ten, looks dearer than the custom plans of groups
	// of a few appends, though both are the same index lookups, and the planning was a
	// third of the statement's time in the database (BENCHMARKS.md, fourteenth pass).
	type inserted struct {
		id       uuid.UUID
		position int64
	}
	rows, err := db.QueryGeneric(ctx, s.pool, func(r pgx.CollectableRow) (inserted, error) {
		var in inserted
		err := r.Scan(&in.id, &in.position)
		return in, err
	}, `
		WITH ok AS (
			SELECT c.stream_id FROM unnest($16::uuid[], $17::int[]) AS c(stream_id, expected)
			WHERE coalesce((SELECT max(e.stream_version) FROM events e WHERE e.stream_id = c.stream_id), 0) = c.expected)
		INSERT INTO events (id, stream_type, stream_id, stream_version, type, schema_version,
			organization_id, actor_type, actor_id, correlation_id, causation_id, request_id, metadata, data, occurred_at)
		SELECT u.id, u.stream_type, u.stream_id, u.version, u.type, u.schema, u.org, u.actor_type, u.actor_id,
			u.corr, u.cause, u.request, u.meta::jsonb, u.data::jsonb, u.at
		FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::int[], $5::text[], $6::int[], $7::uuid[], $8::text[],
			$9::uuid[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::timestamptz[])
			WITH ORDINALITY AS u(id, stream_type, stream_id, version, type, schema, org, actor_type, actor_id,
				corr, cause, request, meta, data, at, ord)
		WHERE u.stream_id IN (SELECT stream_id FROM ok)
		ORDER BY u.ord
		RETURNING id, position`,
		ids, streamTypes, streamIDs, versions, types, schemas, orgs, actorTypes, actorIDs, corrs, causes, requests,
		metas, datas, times, checkStreams, checkVersions)
	// The batch's end is its commit: rows come back only from a batch committed without
	// an error.
	if err != nil {
		return nil, err
	}
	for _, in := range rows {
		r := &results[owner[in.id]]
		r.alone = false
		r.res.Position = max(r.res.Position, in.position)
	}
	return results, nil
}
