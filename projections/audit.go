package projections

import (
	"context"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
)

// AuditName is the audit projector's name (its dead-letter queue is chatbotd.audit.dead).
const AuditName = readmodel.AuditProjection

// Audit writes one audit entry per event of every type. It knows no event type: the entry
// is events.AuditEntryOf, so a new event type is audited as soon as it is published.
type Audit struct{}

func (Audit) Name() string { return AuditName }

func (Audit) Bindings() []string { return []string{"#"} }

// Tables are the tables a rebuild replaces.
func (Audit) Tables() []string { return []string{"audit_entries"} }

// Apply inserts the event's audit entry, as ApplySet does: the runtime calls ApplySet
// for every batch, and one path keeps one behaviour for a duplicate.
func (a Audit) Apply(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
	return a.ApplySet(ctx, tx, []events.Envelope{e})
}

// ApplySet inserts the events' audit entries with one statement (with COPY in a
// rebuild's replay). Entries are new rows that no other event changes, so every event of
// a batch is taken. The runtime hands each stream version over once (its version rows),
// so the insert is a plain one, as the replay's COPY is: an arbiter (ON CONFLICT) made
// every entry a speculative insert, a probe of the key and a second WAL record, for
// a duplicate that does not come (BENCHMARKS.md, twenty-sixth pass). Were one to come,
// its batch would fail and be applied again member by member, then event by event, and
// the event dead-lettered: loud, where the arbiter was silent.
func (Audit) ApplySet(ctx context.Context, tx pgx.Tx, envs []events.Envelope) error {
	entries := make([]events.AuditEntry, len(envs))
	for i, e := range envs {
		a, err := events.AuditEntryOf(e)
		if err != nil {
			return err
		}
		entries[i] = a
	}
	if replaying(ctx) {
		i := 0
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"audit_entries"}, auditColumns, pgx.CopyFromFunc(func() ([]any, error) {
			if i == len(entries) {
				return nil, nil
			}
			a := entries[i]
			i++
			return []any{a.ID, a.Position, a.OrganizationID, a.Action, a.ActorType, a.ActorID, a.SubjectType, a.SubjectID,
				a.RequestID, a.CorrelationID, a.CausationID, a.IPAddress, a.UserAgent, []byte(a.Changes), a.OccurredAt}, nil
		}))
		return err
	}
	// The same rows, one array per column.
	n := len(entries)
	var (
		ids, subjects                 = make([]uuid.UUID, n), make([]uuid.UUID, n)
		orgs, actors                  = make([]*uuid.UUID, n), make([]*uuid.UUID, n)
		positions                     = make([]int64, n)
		actions, actorTypes, subTypes = make([]string, n), make([]string, n), make([]string, n)
		requests, corrs, causes       = make([]string, n), make([]string, n), make([]string, n)
		ips, agents                   = make([]*string, n), make([]*string, n)
		changes                       = make([]string, n)
		times                         = make([]time.Time, n)
	)
	for i, a := range entries {
		ids[i], positions[i], orgs[i], actions[i], actorTypes[i], actors[i] = a.ID, a.Position, a.OrganizationID, a.Action, a.ActorType, a.ActorID
		subTypes[i], subjects[i], requests[i], corrs[i], causes[i] = a.SubjectType, a.SubjectID, a.RequestID, a.CorrelationID, a.CausationID
		ips[i], agents[i], changes[i], times[i] = a.IPAddress, a.UserAgent, string(a.Changes), a.OccurredAt
	}
	_, err := tx.Exec(ctx, `INSERT INTO audit_entries (`+strings.Join(auditColumns, ", ")+`)
		SELECT u.id, u.position, u.org, u.action, u.actor_type, u.actor, u.subject_type, u.subject, u.request, u.corr,
			u.cause, u.ip, u.agent, u.changes::jsonb, u.at
		FROM unnest($1::uuid[], $2::bigint[], $3::uuid[], $4::text[], $5::text[], $6::uuid[], $7::text[], $8::uuid[],
			$9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::timestamptz[])
			AS u(id, position, org, action, actor_type, actor, subject_type, subject, request, corr, cause, ip, agent, changes, at)`,
		ids, positions, orgs, actions, actorTypes, actors, subTypes, subjects, requests, corrs, causes, ips, agents, changes, times)
	return err
}

// auditColumns are audit_entries' columns in the order ApplySet writes them.
var auditColumns = []string{"id", "position", "organization_id", "action", "actor_type", "actor_id", "subject_type",
	"subject_id", "request_id", "correlation_id", "causation_id", "ip_address", "user_agent", "changes", "occurred_at"}
