package projections

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
)

// NotificationsName is the notifications projector's name.
const NotificationsName = readmodel.NotificationsProjection

// Notification kinds.
const (
	NotifyWelcome         = "welcome"
	NotifyPasswordChanged = "password_changed"
	NotifyRoleChanged     = "role_changed"
)

// Notifications decides which emails users get: a welcome when they are created, a
// notice when their password or roles change. It keeps each user's name and address
// from their own stream (so it needs no other read model, and sees them in order), and
// writes each email as a row keyed by the causing event in the transaction that applies
// it: one email per event under any number of duplicate deliveries. The Mailer sends
// the rows.
type Notifications struct{}

func (Notifications) Name() string { return NotificationsName }

// Pipelined says that Apply only Execs (each email's statement reads the recipient the
// one before it wrote, which a pipeline keeps in order): the runtime pipelines a batch's
// writes. A batch of 200 sign-ups was 400 round trips.
func (Notifications) Pipelined() {}

func (Notifications) Bindings() []string {
	return []string{"user.created", "user.updated", "user.deleted", "user.password_changed", "user.role_assigned", "user.role_removed"}
}

// Apply keeps the recipient and writes the event's email, if it has one.
func (Notifications) Apply(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
	ev, err := e.Decode()
	if err != nil {
		return err
	}
	user := e.StreamID
	switch ev := ev.(type) {
	case events.UserCreated:
		if _, err := tx.Exec(ctx, `INSERT INTO notification_recipients (user_id, organization_id, name, email)
			VALUES ($1, $2, $3, $4) ON CONFLICT (user_id) DO UPDATE SET name = excluded.name, email = excluded.email`,
			user, e.OrganizationID, ev.Name, ev.Email); err != nil {
			return err
		}
		return notify(ctx, tx, e, NotifyWelcome, "Welcome to chatbotd",
			fmt.Sprintf("Hello %s,\n\nan account was created for you with the email address %s and the role(s) %s.\n"+
				"You can sign in now.\n", ev.Name, ev.Email, strings.Join(ev.Roles, ", ")))
	case events.UserUpdated:
		name, email := changed(ev.Changes, "name"), changed(ev.Changes, "email")
		_, err := tx.Exec(ctx, `UPDATE notification_recipients SET name = coalesce($2, name), email = coalesce($3, email)
			WHERE user_id = $1`, user, name, email)
		return err
	case events.UserDeleted:
		_, err := tx.Exec(ctx, `DELETE FROM notification_recipients WHERE user_id = $1`, user)
		return err
	case events.UserPasswordChanged:
		from := ""
		if ip := e.Metadata.IPAddress; ip != "" {
			from = " from the address " + ip
		}
		return notify(ctx, tx, e, NotifyPasswordChanged, "Your password was changed",
			fmt.Sprintf("Hello {name},\n\nthe password of your account was changed on %s%s.\n"+
				"If this was not you, contact your organization's administrator at once.\n",
				e.OccurredAt.UTC().Format("2 January 2006 at 15:04 UTC"), from))
	case events.UserRoleAssigned:
		return notify(ctx, tx, e, NotifyRoleChanged, "Your role changed",
			fmt.Sprintf("Hello {name},\n\nyou were given the role %q.\n", ev.Role))
	case events.UserRoleRemoved:
		return notify(ctx, tx, e, NotifyRoleChanged, "Your role changed",
			fmt.Sprintf("Hello {name},\n\nthe role %q was taken from you.\n", ev.Role))
	}
	return nil
}

// notify writes one email to the event's user ({name} in body is their name). A user
// without a known address (deleted) gets none.
func notify(ctx context.Context, tx pgx.Tx, e events.Envelope, kind, subject, body string) error {
	_, err := tx.Exec(ctx, `INSERT INTO notifications (id, organization_id, user_id, kind, to_name, to_address, subject, body,
			status, next_attempt_at, correlation_id)
		SELECT $1, r.organization_id, r.user_id, $3, r.name, r.email, $4, replace($5, '{name}', r.name), 'pending', now(), $6
		FROM notification_recipients r WHERE r.user_id = $2
		ON CONFLICT (id) DO NOTHING`, e.ID, e.StreamID, kind, subject, body, e.CorrelationID)
	if err == nil {
		NoteWork(ctx, readmodel.EmailsWork)
	}
	return err
}
