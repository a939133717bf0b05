package events_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
	"github.com/chatbotsaas/chatbotd/projections"
)

var chainKey = events.ChainKey("0123456789abcdef0123456789abcdef-test-key")

// chained is a database with two organizations' histories, linked into their chains and
// projected into the audit trail.
type chained struct {
	pool      *pgxpool.Pool
	org       uuid.UUID
	positions []int64 // the organization's events, in commit order
}

func newChained(t *testing.T) chained {
	t.Helper()
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	s := eventstore.NewStore(d.Pool)
	c := chained{pool: d.Pool, org: uuid.New()}
	other := uuid.New()
	for i, org := range []uuid.UUID{c.org, other, c.org, other, c.org, c.org, c.org, c.org} {
		u := uuid.New()
		res, err := s.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamUser, StreamID: u, OrganizationID: &org,
			Events: []events.Event{userCreated(u.String()[:8]), events.UserRoleAssigned{Role: "admin"}},
			Meta: events.Meta{Actor: events.Actor{Type: events.ActorSystem}, RequestID: "req-" + string(rune('a'+i)),
				Metadata: events.Metadata{IPAddress: "203.0.113.7", UserAgent: "tests"}}})
		require.NoError(t, err)
		if org == c.org {
			c.positions = append(c.positions, res.Position-1, res.Position)
		}
	}
	// A failed login of an unknown email belongs to no organization.
	_, err := s.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamLogin, StreamID: uuid.New(),
		Events: []events.Event{events.LoginFailed{Email: "nobody@example.com", Reason: "unknown_email"}},
		Meta:   events.Meta{Actor: events.Actor{Type: events.ActorAnonymous}}})
	require.NoError(t, err)

	ch := &eventstore.Chainer{Pool: d.Pool, Key: chainKey, BatchSize: 3} // several batches
	// A transaction running elsewhere on the server (another test's) holds back what is
	// readable: step until every event is linked.
	testenv.Eventually(t, 20*time.Second, func() error {
		if _, err := ch.Step(ctx); err != nil {
			return err
		}
		var events, links int
		if err := d.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM audit_chain)`).Scan(&events, &links); err != nil {
			return err
		}
		if links != events {
			return fmt.Errorf("%d of %d events linked", links, events)
		}
		return nil
	})
	all, _, err := eventstore.ReadHistory(ctx, d.Pool, eventstore.HistoryFilter{}, eventstore.Checkpoint{}, 1000)
	require.NoError(t, err)
	_, err = projections.ApplyBatch(ctx, d.Pool, projections.Audit{}, all)
	require.NoError(t, err)
	return c
}

func (c chained) verify(t *testing.T, org uuid.UUID) eventstore.VerifyReport {
	t.Helper()
	rep, err := eventstore.VerifyChain(context.Background(), c.pool, org, chainKey)
	require.NoError(t, err)
	return rep
}

func (c chained) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	_, err := c.pool.Exec(context.Background(), sql, args...)
	require.NoError(t, err)
}

// tamper lifts the log's append-only guard, as someone with the database's superuser
// could.
func (c chained) tamper(t *testing.T) {
	c.exec(t, `ALTER TABLE events DISABLE TRIGGER USER`)
}

func assertBadAt(t *testing.T, rep eventstore.VerifyReport, position int64, reason string) {
	t.Helper()
	assert.False(t, rep.OK)
	if assert.NotNil(t, rep.FirstBadPosition, rep.Reason) {
		assert.Equal(t, position, *rep.FirstBadPosition, rep.Reason)
	}
	assert.Contains(t, rep.Reason, reason)
}

func TestChainVerifiesUntouchedHistory(t *testing.T) {
	c := newChained(t)
	rep := c.verify(t, c.org)
	assert.True(t, rep.OK, rep.Reason)
	assert.EqualValues(t, len(c.positions), rep.Checked)
	assert.EqualValues(t, len(c.positions), rep.HeadSeq)
	assert.Nil(t, rep.FirstBadPosition)
	// Events of no organization have a chain of their own.
	rep = c.verify(t, uuid.Nil)
	assert.True(t, rep.OK, rep.Reason)
	assert.EqualValues(t, 1, rep.Checked)

	// Entries pruned before the recorded horizon may be missing.
	c.exec(t, `INSERT INTO audit_prunes (before, entries) VALUES (now() + interval '1 minute', 2)`)
	c.exec(t, `DELETE FROM audit_entries WHERE position = ANY($1)`, c.positions[:2])
	rep = c.verify(t, c.org)
	assert.True(t, rep.OK, rep.Reason)
}

func TestChainDetectsTampering(t *testing.T) {
	cases := []struct {
		name   string
		do     func(t *testing.T, c chained) int64 // returns the position that must be reported
		reason string
	}{
		{"event data changed", func(t *testing.T, c chained) int64 {
			c.tamper(t)
			c.exec(t, `UPDATE events SET data = jsonb_set(data, '{name}', '"Mallory"') WHERE position = $1`, c.positions[4])
			return c.positions[4]
		}, "the event differs"},
		{"event metadata changed", func(t *testing.T, c chained) int64 {
			c.tamper(t)
			c.exec(t, `UPDATE events SET metadata = '{"ip_address": "198.51.100.1"}' WHERE position = $1`, c.positions[6])
			return c.positions[6]
		}, "the event differs"},
		{"event deleted", func(t *testing.T, c chained) int64 {
			c.tamper(t)
			c.exec(t, `DELETE FROM events WHERE position = $1`, c.positions[5])
			return c.positions[5]
		}, "deleted"},
		{"two events swapped", func(t *testing.T, c chained) int64 {
			c.tamper(t)
			c.exec(t, `ALTER TABLE events DROP CONSTRAINT events_id_key, DROP CONSTRAINT events_stream_version_key`)
			c.exec(t, `UPDATE events e SET id = o.id, type = o.type, stream_id = o.stream_id, stream_version = o.stream_version,
				data = o.data, occurred_at = o.occurred_at, request_id = o.request_id
				FROM events o WHERE (e.position, o.position) IN (($1, $2), ($2, $1))`, c.positions[3], c.positions[7])
			return c.positions[3]
		}, "the event differs"},
		{"event inserted into the past", func(t *testing.T, c chained) int64 {
			c.tamper(t)
			c.exec(t, `INSERT INTO events (position, id, stream_type, stream_id, stream_version, type, schema_version,
				organization_id, actor_type, data, occurred_at, transaction_id)
				OVERRIDING SYSTEM VALUE
				SELECT 1000000, gen_random_uuid(), 'user', gen_random_uuid(), 1, 'user.deleted', 1, organization_id,
					'system', '{}', occurred_at, transaction_id FROM events WHERE position = $1`, c.positions[2])
			return 1000000
		}, "inserted into history"},
		{"chain rewritten without the key", func(t *testing.T, c chained) int64 {
			c.tamper(t)
			at := c.positions[4]
			c.exec(t, `UPDATE events SET data = jsonb_set(data, '{name}', '"Mallory"') WHERE position = $1`, at)
			relink(t, c, at)
			return at
		}, "signature"},
		{"link deleted", func(t *testing.T, c chained) int64 {
			c.exec(t, `DELETE FROM audit_chain WHERE position = $1`, c.positions[2])
			return c.positions[2]
		}, "not in the chain"},
		{"audit entry changed", func(t *testing.T, c chained) int64 {
			c.exec(t, `UPDATE audit_entries SET ip_address = '10.0.0.1' WHERE position = $1`, c.positions[1])
			return c.positions[1]
		}, "audit entry differs"},
		{"audit entry deleted", func(t *testing.T, c chained) int64 {
			c.exec(t, `DELETE FROM audit_entries WHERE position = $1`, c.positions[8])
			return c.positions[8]
		}, "audit entry is missing"},
		{"audit entries swapped", func(t *testing.T, c chained) int64 {
			c.exec(t, `UPDATE audit_entries SET position = -position WHERE position IN ($1, $2)`, c.positions[2], c.positions[9])
			c.exec(t, `UPDATE audit_entries SET position = CASE position WHEN -$1::bigint THEN $2::bigint ELSE $1::bigint END
				WHERE position IN (-$1::bigint, -$2::bigint)`, c.positions[2], c.positions[9])
			return c.positions[2]
		}, "audit entry differs"},
		{"audit entry forged", func(t *testing.T, c chained) int64 {
			c.exec(t, `INSERT INTO audit_entries (id, position, organization_id, action, actor_type, subject_type, subject_id,
				request_id, changes, occurred_at) VALUES (gen_random_uuid(), 999999, $1, 'user.deleted', 'system', 'user',
				gen_random_uuid(), '', '{}', now())`, c.org)
			return 999999
		}, "inserted into the audit trail"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newChained(t)
			require.True(t, c.verify(t, c.org).OK)
			want := tc.do(t, c)
			assertBadAt(t, c.verify(t, c.org), want, tc.reason)
		})
	}
}

// relink recomputes every link from position at on, as someone who knows the algorithm
// but not the key would: the hashes follow, the signatures cannot.
func relink(t *testing.T, c chained, at int64) {
	t.Helper()
	ctx := context.Background()
	forged := events.ChainKey("not-the-key-not-the-key-not-the-key-!!")
	var prev []byte
	require.NoError(t, c.pool.QueryRow(ctx, `SELECT coalesce((SELECT hash FROM audit_chain WHERE organization_id = $1
		AND seq = (SELECT seq - 1 FROM audit_chain WHERE position = $2)), '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea)`,
		c.org, at).Scan(&prev))
	var seq int64
	require.NoError(t, c.pool.QueryRow(ctx, `SELECT seq FROM audit_chain WHERE position = $1`, at).Scan(&seq))
	for ; ; seq++ {
		var pos int64
		err := c.pool.QueryRow(ctx, `SELECT position FROM audit_chain WHERE organization_id = $1 AND seq = $2`, c.org, seq).Scan(&pos)
		if err != nil {
			break
		}
		evs, _, err := eventstore.ReadHistory(ctx, c.pool, eventstore.HistoryFilter{Organization: &c.org}, eventstore.Checkpoint{}, 1000)
		require.NoError(t, err)
		var ev events.Envelope
		for _, e := range evs {
			if e.Position == pos {
				ev = e
			}
		}
		eh := events.EventHash(ev)
		h := events.LinkHash(prev, eh, seq, pos)
		c.exec(t, `UPDATE audit_chain SET event_hash = $3, hash = $4, signature = $5 WHERE organization_id = $1 AND seq = $2`,
			c.org, seq, eh, h, forged.Sign(c.org, seq, pos, h))
		c.exec(t, `UPDATE audit_chain_heads SET hash = $2 WHERE organization_id = $1 AND seq = $3`, c.org, h, seq)
		prev = h
	}
}
