package query

import (
	"fmt"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/httpx"
	"github.com/chatbotsaas/chatbotd/internal/rbac"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
)

// AdminOrganization is an organization as platform operators list it.
type AdminOrganization struct {
	readmodel.Organization
	// Platform marks the operators' own organization (it cannot be suspended).
	Platform bool `json:"platform"`
	Users    int  `json:"users"`
}

// listOrganizations is GET /admin/organizations: every organization of the platform, for
// platform operators only, filtered by status and a search over name and slug.
func (h *HTTP) listOrganizations(c *gin.Context) {
	if !allowed(c, rbac.PlatformOperate) {
		return
	}
	f := apperr.Fields{}
	page, perPage := pageParams(c, f)
	order := sortParam(c, f, map[string]string{"name": "lower(o.name)", "created_at": "o.created_at"}, "-created_at")
	var where []string
	var args []any
	if v, ok := oneOf(c, f, "status", "active", "suspended"); ok {
		args = append(args, v)
		where = append(where, fmt.Sprintf("o.status = $%d", len(args)))
	}
	if v := strings.TrimSpace(c.Query("search")); v != "" {
		if len(v) > 200 {
			f.Add("search", "must be at most 200 characters")
		}
		args = append(args, likePattern(v))
		where = append(where, fmt.Sprintf("lower(o.name || ' ' || o.slug) LIKE $%d", len(args)))
	}
	if err := f.Err(); err != nil {
		httpx.Fail(c, err)
		return
	}
	if len(where) == 0 {
		where = []string{"true"}
	}
	respondPage(c, h, "Organizations", listQuery{from: "organizations o",
		columns: `o.id, o.name, o.slug, o.status, o.suspension_reason, o.created_at, o.updated_at, o.version, o.platform,
			(SELECT count(*) FROM users u WHERE u.organization_id = o.id AND u.deleted_at IS NULL)`,
		where: strings.Join(where, " AND "), order: order, args: args, page: page, perPage: perPage},
		func(r pgx.CollectableRow) (AdminOrganization, error) {
			var o AdminOrganization
			err := r.Scan(&o.ID, &o.Name, &o.Slug, &o.Status, &o.SuspensionReason, &o.CreatedAt, &o.UpdatedAt, &o.Version,
				&o.Platform, &o.Users)
			o.CreatedAt, o.UpdatedAt = o.CreatedAt.UTC(), o.UpdatedAt.UTC()
			return o, err
		})
}
