package query

import (
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/httpx"
)

// listQuery is one page of a list endpoint: rows of `from` matching where (with args),
// in order.
type listQuery struct {
	from    string // a table, or tables with their join
	columns string
	where   string
	order   string
	args    []any
	page    int
	perPage int
}

// oneOf reads an optional query parameter that must be one of allowed; ok is false when
// it is absent. A value outside allowed is added to f (and still returned, so that the
// caller's query stays well formed until f is reported).
func oneOf(c *gin.Context, f apperr.Fields, name string, allowed ...string) (string, bool) {
	v := c.Query(name)
	if v == "" {
		return "", false
	}
	if !slices.Contains(allowed, v) {
		f.Add(name, "must be one of "+strings.Join(allowed, ", "))
	}
	return v, true
}

// respondPage counts the matches, reads one page with scan, and answers with
// meta.pagination. An empty page is [], never null.
func respondPage[T any](c *gin.Context, h *HTTP, message string, q listQuery, scan func(pgx.CollectableRow) (T, error)) {
	ctx := c.Request.Context()
	var total int
	if err := h.read.QueryRow(ctx, `SELECT count(*) FROM `+q.from+` WHERE `+q.where, q.args...).Scan(&total); err != nil {
		httpx.Fail(c, err)
		return
	}
	rows, err := h.read.Query(ctx, fmt.Sprintf(`SELECT %s FROM %s WHERE %s ORDER BY %s LIMIT %d OFFSET %d`,
		q.columns, q.from, q.where, q.order, q.perPage, (q.page-1)*q.perPage), q.args...)
	if err != nil {
		httpx.Fail(c, err)
		return
	}
	items, err := pgx.CollectRows(rows, scan)
	if err != nil {
		httpx.Fail(c, err)
		return
	}
	if items == nil {
		items = []T{}
	}
	httpx.OK(c, http.StatusOK, message, items, gin.H{"pagination": Pagination{Page: q.page, PerPage: q.perPage, Total: total,
		LastPage: max(1, (total+q.perPage-1)/q.perPage)}})
}

// pageParams reads page and per_page: page from 1, per_page 1..100 (larger is clamped).
func pageParams(c *gin.Context, f apperr.Fields) (page, perPage int) {
	page, perPage = 1, 15
	if v := c.Query("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			f.Add("page", "must be a whole number from 1")
		}
		page = n
	}
	if v := c.Query("per_page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			f.Add("per_page", "must be a whole number from 1 to 100")
		}
		perPage = min(n, 100)
	}
	return page, perPage
}

// sortParam maps ?sort=field|-field onto an ORDER BY clause from the allowed columns.
func sortParam(c *gin.Context, f apperr.Fields, allowed map[string]string, def string) string {
	v := c.DefaultQuery("sort", def)
	desc := strings.HasPrefix(v, "-")
	col, ok := allowed[strings.TrimPrefix(v, "-")]
	if !ok {
		keys := make([]string, 0, len(allowed))
		for k := range allowed {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		f.Add("sort", "must be one of "+strings.Join(keys, ", ")+", optionally prefixed with -")
		return ""
	}
	if desc {
		return col + " DESC, id DESC"
	}
	return col + " ASC, id ASC"
}

func likePattern(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return "%" + r.Replace(strings.ToLower(s)) + "%"
}

// Pagination is meta.pagination of every list.
type Pagination struct {
	Page     int `json:"page"`
	PerPage  int `json:"per_page"`
	Total    int `json:"total"`
	LastPage int `json:"last_page"`
}
