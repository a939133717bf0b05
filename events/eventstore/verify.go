package eventstore

import (
	"bytes"
	"context"
	"crypto/hmac"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/db"
)

// VerifyReport is what a verification of one organization's chain found.
type VerifyReport struct {
	OK bool `json:"ok"`
	// Checked is how many links (events) were checked.
	Checked int64 `json:"checked"`
	// FirstBadPosition is the lowest position at which history or its audit entry
	// differs from what was chained; null when none does (or when only the chain's end
	// is missing, see Reason).
	FirstBadPosition *int64 `json:"first_bad_position"`
	// Problems counts the positions found bad.
	Problems int `json:"problems"`
	// Reason says what is wrong at FirstBadPosition.
	Reason string `json:"reason,omitempty"`
	// HeadSeq and HeadHash are the chain's end. An auditor who records them can later
	// tell that nothing before them was cut off.
	HeadSeq  int64  `json:"head_seq"`
	HeadHash string `json:"head_hash"`
}

func (r *VerifyReport) bad(position int64, reason string) {
	r.OK = false
	r.Problems++
	if r.FirstBadPosition == nil || position < *r.FirstBadPosition {
		p := position
		r.FirstBadPosition, r.Reason = &p, reason
	}
}

type link struct {
	seq, position           int64
	eventHash, hash, signed []byte
}

const verifyPage = 5000

// VerifyChain recomputes an organization's chain (uuid.Nil: events of no organization)
// from the event log in one snapshot: each link's event, hash and signature, each audit
// entry against its event, and that no event or audit entry lies outside the chain.
func VerifyChain(ctx context.Context, pool *pgxpool.Pool, org uuid.UUID, key events.ChainKey) (VerifyReport, error) {
	rep := VerifyReport{OK: true}
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return rep, db.Classify(err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	// Entries that occurred before the last prune's horizon may be missing.
	var pruned *time.Time
	if err := tx.QueryRow(ctx, `SELECT max(before) FROM audit_prunes`).Scan(&pruned); err != nil {
		return rep, db.Classify(err)
	}
	var prunedBefore time.Time
	if pruned != nil {
		prunedBefore = *pruned
	}
	cp, err := loadCheckpoint(ctx, tx, chainCheckpoint)
	if err != nil {
		return rep, err
	}
	prev, expect := genesis, int64(1)
	for {
		links, err := readLinks(ctx, tx, org, expect)
		if err != nil {
			return rep, err
		}
		if len(links) == 0 {
			break
		}
		if err := checkLinks(ctx, tx, &rep, org, key, links, &prev, &expect, prunedBefore); err != nil {
			return rep, err
		}
		if len(links) < verifyPage {
			break
		}
	}

	// The head must be where the walk ended: links cut off the end are missing otherwise.
	var headSeq int64
	var headHash []byte
	err = tx.QueryRow(ctx, `SELECT seq, hash FROM audit_chain_heads WHERE organization_id = $1`, org).Scan(&headSeq, &headHash)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return rep, db.Classify(err)
	}
	rep.HeadSeq, rep.HeadHash = headSeq, hex.EncodeToString(headHash)
	if headSeq != expect-1 || (headSeq > 0 && !bytes.Equal(headHash, prev)) {
		rep.OK = false
		rep.Problems++
		if rep.FirstBadPosition == nil {
			rep.Reason = fmt.Sprintf("the chain's head is link %d but the links end at %d", headSeq, expect-1)
		}
	}

	orgArg := orgFilter(org)
	// Events of the organization that should have been linked and were not: inserted.
	var inserted *int64
	if err := tx.QueryRow(ctx, `SELECT min(e.position) FROM events e
		WHERE e.organization_id IS NOT DISTINCT FROM $1 AND (e.transaction_id, e.position) <= ($2::text::xid8, $3::bigint)
		  AND NOT EXISTS (SELECT 1 FROM audit_chain l WHERE l.position = e.position)`,
		orgArg, strconv.FormatUint(cp.TransactionID, 10), cp.Position).Scan(&inserted); err != nil {
		return rep, db.Classify(err)
	}
	if inserted != nil {
		rep.bad(*inserted, "an event that is not in the chain: inserted into history, or its link deleted")
	}
	// Audit entries that belong to no linked event of the organization and to no event
	// waiting to be linked: forged.
	var forged *int64
	if err := tx.QueryRow(ctx, `SELECT min(a.position) FROM audit_entries a
		WHERE a.organization_id IS NOT DISTINCT FROM $1
		  AND NOT EXISTS (SELECT 1 FROM audit_chain l WHERE l.position = a.position AND l.organization_id = $4)
		  AND NOT EXISTS (SELECT 1 FROM events e WHERE e.position = a.position
		                  AND (e.transaction_id, e.position) > ($2::text::xid8, $3::bigint))`,
		orgArg, strconv.FormatUint(cp.TransactionID, 10), cp.Position, org).Scan(&forged); err != nil {
		return rep, db.Classify(err)
	}
	if forged != nil {
		rep.bad(*forged, "an audit entry of no event in the chain: inserted into the audit trail")
	}
	return rep, nil
}

func orgFilter(org uuid.UUID) *uuid.UUID {
	if org == uuid.Nil {
		return nil
	}
	return &org
}

func readLinks(ctx context.Context, tx pgx.Tx, org uuid.UUID, from int64) ([]link, error) {
	rows, err := tx.Query(ctx, `SELECT seq, position, event_hash, hash, signature FROM audit_chain
		WHERE organization_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3`, org, from, verifyPage)
	if err != nil {
		return nil, db.Classify(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (link, error) {
		var l link
		err := r.Scan(&l.seq, &l.position, &l.eventHash, &l.hash, &l.signed)
		return l, err
	})
	return out, db.Classify(err)
}

func checkLinks(ctx context.Context, tx pgx.Tx, rep *VerifyReport, org uuid.UUID, key events.ChainKey, links []link,
	prev *[]byte, expect *int64, prunedBefore time.Time) error {
	positions := make([]int64, len(links))
	for i, l := range links {
		positions[i] = l.position
	}
	rows, err := tx.Query(ctx, `SELECT `+envelopeColumns+` FROM events WHERE position = ANY($1)`, positions)
	if err != nil {
		return db.Classify(err)
	}
	stored, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (events.Envelope, error) { return scanEnvelope(r) })
	if err != nil {
		return db.Classify(err)
	}
	evs := make(map[int64]events.Envelope, len(stored))
	streams := make([]uuid.UUID, 0, len(stored))
	for _, e := range stored {
		evs[e.Position] = e
		streams = append(streams, e.StreamID)
	}
	rows, err = tx.Query(ctx, `SELECT `+AuditColumns+` FROM audit_entries WHERE position = ANY($1)`, positions)
	if err != nil {
		return db.Classify(err)
	}
	entries, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (events.AuditEntry, error) { return ScanAuditEntry(r) })
	if err != nil {
		return db.Classify(err)
	}
	audits := make(map[int64]events.AuditEntry, len(entries))
	for _, a := range entries {
		audits[a.Position] = a
	}
	// How far the audit projector has got in each stream: an entry it has not written
	// yet is not missing.
	applied := map[uuid.UUID]int{}
	rows, err = tx.Query(ctx, `SELECT stream_id, version FROM projection_streams WHERE projection = 'audit' AND stream_id = ANY($1)`, streams)
	if err != nil {
		return db.Classify(err)
	}
	var s uuid.UUID
	var v int
	if _, err := pgx.ForEachRow(rows, []any{&s, &v}, func() error { applied[s] = v; return nil }); err != nil {
		return db.Classify(err)
	}

	for _, l := range links {
		rep.Checked++
		if l.seq != *expect {
			rep.bad(l.position, fmt.Sprintf("links %d to %d are missing before this one", *expect, l.seq-1))
		}
		e, found := evs[l.position]
		switch {
		case !found:
			rep.bad(l.position, "the event is missing from the log: deleted")
		case chainOrg(e) != org:
			rep.bad(l.position, "the event now belongs to another organization")
		case !bytes.Equal(events.EventHash(e), l.eventHash):
			rep.bad(l.position, "the event differs from the one chained: changed or moved")
		}
		if !bytes.Equal(events.LinkHash(*prev, l.eventHash, l.seq, l.position), l.hash) {
			rep.bad(l.position, "the link does not follow from the one before it")
		}
		if !hmac.Equal(key.Sign(org, l.seq, l.position, l.hash), l.signed) {
			rep.bad(l.position, "the link's signature is not valid: the chain was rewritten")
		}
		if found {
			a, has := audits[l.position]
			switch {
			case has:
				want, err := events.AuditEntryOf(e)
				if err != nil || !want.SameAs(a) {
					rep.bad(l.position, "the audit entry differs from its event")
				}
			case !e.OccurredAt.Before(prunedBefore) && applied[e.StreamID] >= e.StreamVersion:
				rep.bad(l.position, "the audit entry is missing: deleted")
			}
		}
		*prev, *expect = l.hash, l.seq+1
	}
	return nil
}
