package query

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/httpx"
	"github.com/chatbotsaas/chatbotd/internal/rbac"
)

// Webhook is a webhook subscription as listed. The secret is never shown again.
type Webhook struct {
	ID                  uuid.UUID `json:"id"`
	URL                 string    `json:"url"`
	Events              []string  `json:"events"`
	Status              string    `json:"status"`
	DisabledReason      *string   `json:"disabled_reason"`
	ConsecutiveFailures int       `json:"consecutive_failures"`
	CreatedAt           time.Time `json:"created_at"`
	UpdatedAt           time.Time `json:"updated_at"`
}

const webhookColumns = `id, url, events, status, disabled_reason, consecutive_failures, created_at, updated_at`

func scanWebhook(r pgx.Row) (Webhook, error) {
	var w Webhook
	err := r.Scan(&w.ID, &w.URL, &w.Events, &w.Status, &w.DisabledReason, &w.ConsecutiveFailures, &w.CreatedAt, &w.UpdatedAt)
	w.CreatedAt, w.UpdatedAt = w.CreatedAt.UTC(), w.UpdatedAt.UTC()
	return w, err
}

// listWebhooks is GET /api/v1/webhooks: the organization's subscriptions, newest first.
func (h *HTTP) listWebhooks(c *gin.Context) {
	if !allowed(c, rbac.WebhooksRead) {
		return
	}
	f := apperr.Fields{}
	page, perPage := pageParams(c, f)
	if err := f.Err(); err != nil {
		httpx.Fail(c, err)
		return
	}
	respondPage(c, h, "Webhooks", listQuery{from: "webhooks", columns: webhookColumns,
		where: "organization_id = $1 AND status <> 'deleted'", order: "created_at DESC, id",
		args: []any{principal(c).OrganizationID}, page: page, perPage: perPage},
		func(r pgx.CollectableRow) (Webhook, error) { return scanWebhook(r) })
}

// webhook reads the subscription of the path's id in the caller's organization.
func (h *HTTP) webhook(c *gin.Context) (Webhook, bool) {
	return inOrganization(c, h, "webhook", byID("webhooks", webhookColumns, "status <> 'deleted'"), scanWebhook)
}

func (h *HTTP) getWebhook(c *gin.Context) {
	if !allowed(c, rbac.WebhooksRead) {
		return
	}
	if w, ok := h.webhook(c); ok {
		httpx.OK(c, http.StatusOK, "Webhook", w, nil)
	}
}

// Delivery is one event's delivery to a subscription, with every attempt.
type Delivery struct {
	ID             uuid.UUID  `json:"id"`
	EventID        uuid.UUID  `json:"event_id"`
	EventType      string     `json:"event_type"`
	StreamID       uuid.UUID  `json:"stream_id"`
	StreamVersion  int        `json:"stream_version"`
	Status         string     `json:"status"` // pending, delivered, failed, cancelled
	AttemptCount   int        `json:"attempt_count"`
	NextAttemptAt  *time.Time `json:"next_attempt_at"`
	LastStatusCode *int       `json:"last_status_code"`
	LastError      *string    `json:"last_error"`
	CreatedAt      time.Time  `json:"created_at"`
	FinishedAt     *time.Time `json:"finished_at"`
	Attempts       []Attempt  `json:"attempts"`
}

// Attempt is one HTTP attempt of a delivery. StatusCode is null when no answer came
// (Error says why).
type Attempt struct {
	Attempt     int       `json:"attempt"`
	StatusCode  *int      `json:"status_code"`
	Error       *string   `json:"error"`
	DurationMS  int       `json:"duration_ms"`
	AttemptedAt time.Time `json:"attempted_at"`
}

// listDeliveries is GET /api/v1/webhooks/{id}/deliveries: newest first, each with its
// attempts; ?status= filters.
func (h *HTTP) listDeliveries(c *gin.Context) {
	if !allowed(c, rbac.WebhooksRead) {
		return
	}
	f := apperr.Fields{}
	page, perPage := pageParams(c, f)
	where := "webhook_id = $1 AND organization_id = $2"
	status := c.Query("status")
	switch status {
	case "":
	case "pending", "delivered", "failed", "cancelled":
		where += " AND status = $3"
	default:
		f.Add("status", "must be one of pending, delivered, failed, cancelled")
	}
	if err := f.Err(); err != nil {
		httpx.Fail(c, err)
		return
	}
	w, ok := h.webhook(c)
	if !ok {
		return
	}
	args := []any{w.ID, principal(c).OrganizationID}
	if status != "" {
		args = append(args, status)
	}
	respondPage(c, h, "Deliveries", listQuery{from: "webhook_deliveries d",
		// A pending delivery's lease and its claims so far are in webhook_queue.
		columns: `id, event_id, event_type, stream_id, stream_version, status,
			coalesce((SELECT q.attempts FROM webhook_queue q WHERE q.delivery_id = d.id), attempts),
			(SELECT greatest(q.next_attempt_at, q.leased_until) FROM webhook_queue q WHERE q.delivery_id = d.id),
			last_status_code, last_error, created_at, finished_at,
			(SELECT coalesce(json_agg(json_build_object('attempt', a.attempt, 'status_code', a.status_code, 'error', a.error,
				'duration_ms', a.duration_ms, 'attempted_at', a.attempted_at) ORDER BY a.attempt), '[]')
			 FROM webhook_attempts a WHERE a.delivery_id = d.id)`,
		where: where, order: "created_at DESC, id DESC", args: args, page: page, perPage: perPage},
		func(r pgx.CollectableRow) (Delivery, error) {
			var d Delivery
			var attempts []byte
			err := r.Scan(&d.ID, &d.EventID, &d.EventType, &d.StreamID, &d.StreamVersion, &d.Status, &d.AttemptCount,
				&d.NextAttemptAt, &d.LastStatusCode, &d.LastError, &d.CreatedAt, &d.FinishedAt, &attempts)
			if err != nil {
				return d, err
			}
			d.CreatedAt = d.CreatedAt.UTC()
			if err := json.Unmarshal(attempts, &d.Attempts); err != nil {
				return d, err
			}
			for i := range d.Attempts {
				d.Attempts[i].AttemptedAt = d.Attempts[i].AttemptedAt.UTC()
			}
			return d, nil
		})
}
