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

// Conversation is a conversation as listed.
type Conversation struct {
	ID             uuid.UUID      `json:"id"`
	ChatbotID      uuid.UUID      `json:"chatbot_id"`
	OrganizationID uuid.UUID      `json:"organization_id"`
	Metadata       map[string]any `json:"metadata"`
	Messages       int            `json:"messages"`
	LastMessageAt  *time.Time     `json:"last_message_at"`
	CreatedAt      time.Time      `json:"created_at"`
}

const conversationColumns = `id, chatbot_id, organization_id, metadata, messages, last_message_at, created_at`

func scanConversation(row pgx.Row) (Conversation, error) {
	var c Conversation
	var meta []byte
	if err := row.Scan(&c.ID, &c.ChatbotID, &c.OrganizationID, &meta, &c.Messages, &c.LastMessageAt, &c.CreatedAt); err != nil {
		return c, err
	}
	c.CreatedAt = c.CreatedAt.UTC()
	if c.LastMessageAt != nil {
		*c.LastMessageAt = c.LastMessageAt.UTC()
	}
	return c, json.Unmarshal(meta, &c.Metadata)
}

// listConversations lists the organization's conversations, newest first, optionally
// of one chatbot.
func (h *HTTP) listConversations(c *gin.Context) {
	if !allowed(c, rbac.ConversationsRead) {
		return
	}
	f := apperr.Fields{}
	page, perPage := pageParams(c, f)
	args := []any{principal(c).OrganizationID}
	cond := "organization_id = $1"
	if v := c.Query("chatbot_id"); v != "" {
		id, err := uuid.Parse(v)
		if err != nil {
			f.Add("chatbot_id", "must be a UUID")
		}
		args = append(args, id)
		cond += " AND chatbot_id = $2"
	}
	if err := f.Err(); err != nil {
		httpx.Fail(c, err)
		return
	}
	respondPage(c, h, "Conversations", listQuery{from: "conversations", columns: conversationColumns, where: cond,
		order: "created_at DESC, id DESC", args: args, page: page, perPage: perPage},
		func(r pgx.CollectableRow) (Conversation, error) { return scanConversation(r) })
}

func (h *HTTP) conversation(c *gin.Context) (Conversation, bool) {
	return inOrganization(c, h, "conversation", byID("conversations", conversationColumns, "true"), scanConversation)
}

func (h *HTTP) getConversation(c *gin.Context) {
	if !allowed(c, rbac.ConversationsRead) {
		return
	}
	if conv, ok := h.conversation(c); ok {
		httpx.OK(c, http.StatusOK, "Conversation", conv, nil)
	}
}

// Message is a message as listed.
type Message struct {
	ID            uuid.UUID  `json:"id"`
	Role          string     `json:"role"`
	Content       string     `json:"content"`
	Status        *string    `json:"status"`
	ReplyTo       *uuid.UUID `json:"reply_to"`
	FailureCode   *string    `json:"failure_code,omitempty"`
	FailureReason *string    `json:"failure_reason,omitempty"`
	CreatedAt     time.Time  `json:"created_at"`
}

// listMessages lists a conversation's messages, oldest first.
func (h *HTTP) listMessages(c *gin.Context) {
	if !allowed(c, rbac.ConversationsRead) {
		return
	}
	f := apperr.Fields{}
	page, perPage := pageParams(c, f)
	if err := f.Err(); err != nil {
		httpx.Fail(c, err)
		return
	}
	conv, ok := h.conversation(c)
	if !ok {
		return
	}
	respondPage(c, h, "Messages", listQuery{from: "messages",
		columns: "id, role, content, status, reply_to, failure_code, failure_reason, created_at",
		where:   "conversation_id = $1 AND organization_id = $2", order: "created_at, role DESC, id",
		args: []any{conv.ID, conv.OrganizationID}, page: page, perPage: perPage},
		func(r pgx.CollectableRow) (Message, error) {
			var m Message
			err := r.Scan(&m.ID, &m.Role, &m.Content, &m.Status, &m.ReplyTo, &m.FailureCode, &m.FailureReason, &m.CreatedAt)
			m.CreatedAt = m.CreatedAt.UTC()
			return m, err
		})
}
