package projections

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
)

// AuditName is the audit projector's name (its queue is chatbotd.audit).
const AuditName = readmodel.AuditProjection

// Audit writes one audit entry per event of every type. It knows no event type: the entry
// is events.AuditEntryOf, so a new event type is audited as soon as it is published.
type Audit struct{}

func (Audit) Name() string { return AuditName }

func (Audit) Bindings() []string { return []string{"#"} }

// Tables are the tables a rebuild replaces.
func (Audit) Tables() []string { return []string{"audit_entries"} }

// Apply inserts the event's audit entry. The runtime applies each stream version once;
// the entry's key (the event id) makes a second insert a no-op all the same.
func (Audit) Apply(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
	a, err := events.AuditEntryOf(e)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO audit_entries (id, position, organization_id, action, actor_type, actor_id,
		subject_type, subject_id, request_id, correlation_id, causation_id, ip_address, user_agent, changes, occurred_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) ON CONFLICT (id) DO NOTHING`,
		a.ID, a.Position, a.OrganizationID, a.Action, a.ActorType, a.ActorID, a.SubjectType, a.SubjectID,
		a.RequestID, a.CorrelationID, a.CausationID, a.IPAddress, a.UserAgent, []byte(a.Changes), a.OccurredAt)
	return err
}
