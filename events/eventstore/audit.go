package eventstore

import (
	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/events"
)

// AuditColumns are audit_entries' columns in ScanAuditEntry's order.
const AuditColumns = `id, action, actor_id, actor_type, subject_type, subject_id, organization_id, request_id,
	correlation_id, causation_id, ip_address, user_agent, changes, occurred_at, position`

// ScanAuditEntry reads one row selected with AuditColumns.
func ScanAuditEntry(row pgx.Row) (events.AuditEntry, error) {
	var a events.AuditEntry
	var changes []byte
	err := row.Scan(&a.ID, &a.Action, &a.ActorID, &a.ActorType, &a.SubjectType, &a.SubjectID, &a.OrganizationID,
		&a.RequestID, &a.CorrelationID, &a.CausationID, &a.IPAddress, &a.UserAgent, &changes, &a.OccurredAt, &a.Position)
	a.Changes = changes
	a.OccurredAt = a.OccurredAt.UTC()
	return a, err
}
