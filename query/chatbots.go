package query

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/httpx"
	"github.com/chatbotsaas/chatbotd/internal/rbac"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
)

// listChatbots lists the organization's chatbots: filter status (draft, published),
// full-text search over name and description, sort by name or created_at.
func (h *HTTP) listChatbots(c *gin.Context) {
	if !allowed(c, rbac.ChatbotsRead) {
		return
	}
	f := apperr.Fields{}
	page, perPage := pageParams(c, f)
	order := sortParam(c, f, map[string]string{"name": "lower(name)", "created_at": "created_at", "updated_at": "updated_at"}, "created_at")
	where := []string{"organization_id = $1", "deleted_at IS NULL"}
	args := []any{principal(c).OrganizationID}
	if v, ok := oneOf(c, f, "status", "draft", "published"); ok {
		args = append(args, v)
		where = append(where, fmt.Sprintf("status = $%d", len(args)))
	}
	if v := strings.TrimSpace(c.Query("search")); v != "" {
		if len(v) > 200 {
			f.Add("search", "must be at most 200 characters")
		}
		// Whole words through the GIN index, or a prefix of the name.
		args = append(args, v, likePattern(v))
		where = append(where, fmt.Sprintf("(search @@ websearch_to_tsquery('simple', $%d) OR lower(name) LIKE $%d)", len(args)-1, len(args)))
	}
	if err := f.Err(); err != nil {
		httpx.Fail(c, err)
		return
	}
	respondPage(c, h, "Chatbots", listQuery{from: "chatbots", columns: readmodel.ChatbotColumns, where: strings.Join(where, " AND "),
		order: order, args: args, page: page, perPage: perPage},
		func(r pgx.CollectableRow) (readmodel.Chatbot, error) { return readmodel.ScanChatbot(r) })
}

func (h *HTTP) getChatbot(c *gin.Context) {
	if !allowed(c, rbac.ChatbotsRead) {
		return
	}
	b, ok := inOrganization(c, h, "chatbot", byID("chatbots", readmodel.ChatbotColumns, "deleted_at IS NULL"), readmodel.ScanChatbot)
	if !ok {
		return
	}
	c.Header("ETag", strconv.Quote(strconv.Itoa(b.Version)))
	httpx.OK(c, http.StatusOK, "Chatbot", b, nil)
}

// listKnowledge lists a chatbot's knowledge entries, oldest first; search over question
// and answer, filter by tag.
func (h *HTTP) listKnowledge(c *gin.Context) {
	if !allowed(c, rbac.ChatbotsRead) {
		return
	}
	bot, err := httpx.PathUUID(c, "id")
	if err != nil {
		httpx.Fail(c, err)
		return
	}
	f := apperr.Fields{}
	page, perPage := pageParams(c, f)
	ctx := c.Request.Context()
	org := principal(c).OrganizationID
	var exists bool
	if err := h.read.QueryRow(ctx, `SELECT EXISTS (`+byID("chatbots", "1", "deleted_at IS NULL")+`)`, bot, org).Scan(&exists); err != nil {
		httpx.Fail(c, err)
		return
	}
	if !exists {
		httpx.Fail(c, apperr.NotFound("chatbot"))
		return
	}
	where := []string{"chatbot_id = $1", "organization_id = $2", "deleted_at IS NULL"}
	args := []any{bot, org}
	if v := strings.TrimSpace(c.Query("search")); v != "" {
		args = append(args, likePattern(v))
		where = append(where, fmt.Sprintf("(lower(question) LIKE $%d OR lower(answer) LIKE $%d)", len(args), len(args)))
	}
	if v := c.Query("tag"); v != "" {
		args = append(args, v)
		where = append(where, fmt.Sprintf("$%d = ANY(tags)", len(args)))
	}
	if err := f.Err(); err != nil {
		httpx.Fail(c, err)
		return
	}
	respondPage(c, h, "Knowledge entries", listQuery{from: "knowledge_entries",
		columns: "id, chatbot_id, question, answer, tags, created_at, updated_at", where: strings.Join(where, " AND "),
		order: "created_at, id", args: args, page: page, perPage: perPage},
		func(r pgx.CollectableRow) (readmodel.KnowledgeEntry, error) {
			var e readmodel.KnowledgeEntry
			err := r.Scan(&e.ID, &e.ChatbotID, &e.Question, &e.Answer, &e.Tags, &e.CreatedAt, &e.UpdatedAt)
			e.CreatedAt, e.UpdatedAt = e.CreatedAt.UTC(), e.UpdatedAt.UTC()
			return e, err
		})
}
