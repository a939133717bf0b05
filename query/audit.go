package query

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/httpx"
	"github.com/chatbotsaas/chatbotd/internal/rbac"
)

// auditFilter turns the audit-log filters of the query string into SQL over
// audit_entries: action, actor_id, subject_type, subject_id, request_id, correlation_id,
// from, to. Every
// combination is served by an index that starts with the organization and ends with the
// order (occurred_at, position) descending.
func auditFilter(c *gin.Context, f apperr.Fields) (where []string, args []any) {
	where = []string{"organization_id = $1"}
	args = []any{principal(c).OrganizationID}
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	text := func(name string, max int) {
		if v := c.Query(name); v != "" {
			if len(v) > max {
				f.Add(name, fmt.Sprintf("must be at most %d characters", max))
			}
			add(name+" = $%d", v)
		}
	}
	text("action", 100)
	text("subject_type", 50)
	text("request_id", 128)
	text("correlation_id", 128)
	for _, name := range []string{"actor_id", "subject_id"} {
		if v := c.Query(name); v != "" {
			id, err := uuid.Parse(v)
			if err != nil {
				f.Add(name, "must be a UUID")
			}
			add(name+" = $%d", id)
		}
	}
	from, to := timeParam(c, f, "from"), timeParam(c, f, "to")
	if from != nil {
		add("occurred_at >= $%d", *from)
	}
	if to != nil {
		add("occurred_at < $%d", *to)
	}
	if from != nil && to != nil && !from.Before(*to) {
		f.Add("to", "must be after from")
	}
	return where, args
}

// timeParam reads an RFC 3339 time from the query string.
func timeParam(c *gin.Context, f apperr.Fields, name string) *time.Time {
	v := c.Query(name)
	if v == "" {
		return nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		f.Add(name, "must be an RFC 3339 time, e.g. 2026-01-27T10:30:00Z")
		return nil
	}
	return &t
}

const auditOrder = "occurred_at DESC, position DESC"

// listAuditLogs is GET /api/v1/audit-logs: the organization's audit entries, newest first.
func (h *HTTP) listAuditLogs(c *gin.Context) {
	if !allowed(c, rbac.AuditRead) {
		return
	}
	f := apperr.Fields{}
	page, perPage := pageParams(c, f)
	where, args := auditFilter(c, f)
	if err := f.Err(); err != nil {
		httpx.Fail(c, err)
		return
	}
	respondPage(c, h, "Audit logs", listQuery{from: "audit_entries", columns: eventstore.AuditColumns,
		where: strings.Join(where, " AND "), order: auditOrder, args: args, page: page, perPage: perPage},
		func(r pgx.CollectableRow) (events.AuditEntry, error) { return eventstore.ScanAuditEntry(r) })
}

// exportPage is how many entries an export reads per query. Pages follow each other by
// keyset, so memory stays constant and no snapshot is held for the whole export.
const exportPage = 2000

// exportAuditLogs is GET /api/v1/audit-logs/export: every matching entry, newest first,
// streamed as NDJSON (default) or CSV.
func (h *HTTP) exportAuditLogs(c *gin.Context) {
	if !allowed(c, rbac.AuditRead) {
		return
	}
	f := apperr.Fields{}
	format := c.DefaultQuery("format", "ndjson")
	if format != "ndjson" && format != "csv" {
		f.Add("format", "must be one of ndjson, csv")
	}
	where, args := auditFilter(c, f)
	if err := f.Err(); err != nil {
		httpx.Fail(c, err)
		return
	}
	ctx := c.Request.Context()
	// The first page is read before the status is sent, so that a database that is down
	// still gets its 503.
	page, err := h.auditPage(c, where, args, nil)
	if err != nil {
		httpx.Fail(c, err)
		return
	}
	name := "audit-logs-" + time.Now().UTC().Format("20060102T150405Z") + "." + format
	c.Header("Content-Disposition", `attachment; filename="`+name+`"`)
	c.Header("Cache-Control", "no-store")
	bw := bufio.NewWriterSize(c.Writer, 64<<10)
	var write func(events.AuditEntry) error
	flush := bw.Flush
	if format == "csv" {
		c.Header("Content-Type", "text/csv; charset=utf-8")
		cw := csv.NewWriter(bw)
		_ = cw.Write(auditCSVHeader)
		write = func(a events.AuditEntry) error { return cw.Write(auditCSVRow(a)) }
		flush = func() error { cw.Flush(); return errors.Join(cw.Error(), bw.Flush()) }
	} else {
		c.Header("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(bw)
		write = func(a events.AuditEntry) error { return enc.Encode(a) }
	}
	c.Status(http.StatusOK)
	rc := http.NewResponseController(c.Writer)
	for len(page) > 0 {
		// A long export is not cut by the server's write timeout while it makes progress.
		_ = rc.SetWriteDeadline(time.Now().Add(time.Minute))
		for _, a := range page {
			if err := write(a); err != nil {
				return // the client went away
			}
		}
		if len(page) < exportPage {
			break
		}
		if page, err = h.auditPage(c, where, args, &page[len(page)-1]); err != nil {
			// The status is sent: end the response abnormally, so the client sees a broken
			// transfer rather than a complete-looking file.
			httpx.NoteError(c, fmt.Errorf("audit export interrupted: %w", err))
			_ = flush()
			panic(http.ErrAbortHandler)
		}
		if ctx.Err() != nil {
			return
		}
	}
	_ = flush()
}

func (h *HTTP) auditPage(c *gin.Context, where []string, args []any, after *events.AuditEntry) ([]events.AuditEntry, error) {
	w := where
	a := args
	if after != nil {
		a = append(append([]any{}, args...), after.OccurredAt, after.Position)
		w = append(append([]string{}, where...), fmt.Sprintf("(occurred_at, position) < ($%d, $%d)", len(a)-1, len(a)))
	}
	rows, err := h.read.Query(c.Request.Context(), `SELECT `+eventstore.AuditColumns+` FROM audit_entries WHERE `+
		strings.Join(w, " AND ")+` ORDER BY `+auditOrder+` LIMIT `+strconv.Itoa(exportPage), a...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (events.AuditEntry, error) { return eventstore.ScanAuditEntry(r) })
}

var auditCSVHeader = []string{"id", "action", "actor_type", "actor_id", "subject_type", "subject_id", "organization_id",
	"request_id", "correlation_id", "causation_id", "ip_address", "user_agent", "changes", "occurred_at", "position"}

func auditCSVRow(a events.AuditEntry) []string {
	id := func(u *uuid.UUID) string {
		if u == nil {
			return ""
		}
		return u.String()
	}
	str := func(s *string) string {
		if s == nil {
			return ""
		}
		return *s
	}
	return []string{a.ID.String(), a.Action, a.ActorType, id(a.ActorID), a.SubjectType, a.SubjectID.String(),
		id(a.OrganizationID), cell(a.RequestID), cell(a.CorrelationID), cell(a.CausationID), cell(str(a.IPAddress)), cell(str(a.UserAgent)), cell(string(a.Changes)),
		a.OccurredAt.Format(time.RFC3339Nano), strconv.FormatInt(a.Position, 10)}
}

// cell keeps a spreadsheet from running a value as a formula (CSV injection): a cell that
// would start with = + - @ or a control character gets a leading apostrophe.
func cell(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

// maxEventsLimit bounds one /events response; a replay goes on with after.
const maxEventsLimit = 10000

// listEvents is GET /api/v1/events: the organization's raw history in commit order (the
// relay's order), as NDJSON envelopes. after is the position of the last event the
// client has; the next response starts right after it in that order, so a replay that
// always resumes from its last line never misses an event, even one that commits late.
func (h *HTTP) listEvents(c *gin.Context) {
	if !allowed(c, rbac.AuditRead) {
		return
	}
	f := apperr.Fields{}
	org := principal(c).OrganizationID
	filter := eventstore.HistoryFilter{Organization: &org}
	limit := 1000
	if v := c.Query("limit"); v != "" {
		n, err := strconv.Atoi(v)
		// One rule both ways: out of range is 422, as the message says (never clamped).
		if err != nil || n < 1 || n > maxEventsLimit {
			f.Add("limit", fmt.Sprintf("must be a whole number from 1 to %d", maxEventsLimit))
		}
		limit = n
	}
	if v := c.Query("stream_id"); v != "" {
		id, err := uuid.Parse(v)
		if err != nil {
			f.Add("stream_id", "must be a UUID")
		}
		filter.StreamID = &id
	}
	if v := c.Query("type"); v != "" {
		for _, t := range strings.Split(v, ",") {
			if _, ok := events.SchemaVersionOf(strings.TrimSpace(t)); !ok {
				f.Add("type", fmt.Sprintf("%q is not an event type (see /api/v1/events/catalog)", t))
			}
			filter.Types = append(filter.Types, strings.TrimSpace(t))
		}
	}
	filter.From, filter.To = timeParam(c, f, "from"), timeParam(c, f, "to")
	var after int64
	if v := c.Query("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			f.Add("after", "must be a position (a whole number from 0)")
		}
		after = n
	}
	if err := f.Err(); err != nil {
		httpx.Fail(c, err)
		return
	}
	ctx := c.Request.Context()
	var cp eventstore.Checkpoint
	if after > 0 {
		var err error
		if cp, err = eventstore.ResumeAfter(ctx, h.read, after, &org); errors.Is(err, eventstore.ErrUnknownPosition) {
			httpx.Fail(c, apperr.Invalid("after", "is not the position of an event of this organization"))
			return
		} else if err != nil {
			httpx.Fail(c, err)
			return
		}
	}
	batch, next, err := eventstore.ReadHistory(ctx, h.read, filter, cp, min(limit, 1000))
	if err != nil {
		httpx.Fail(c, err)
		return
	}
	store := h.store.Load()
	if store == nil {
		id, err := eventstore.Identity(ctx, h.read)
		if err != nil {
			httpx.Fail(c, err)
			return
		}
		store = &id
		h.store.Store(store)
	}
	c.Header("Content-Type", "application/x-ndjson")
	c.Header("Cache-Control", "no-store")
	c.Status(http.StatusOK)
	bw := bufio.NewWriterSize(c.Writer, 64<<10)
	enc := json.NewEncoder(bw)
	sent := 0
	for len(batch) > 0 {
		for _, e := range batch {
			e.StoreID = store
			if err := enc.Encode(e); err != nil {
				return
			}
		}
		sent += len(batch)
		if sent >= limit || len(batch) < min(limit, 1000) {
			break
		}
		if batch, next, err = eventstore.ReadHistory(ctx, h.read, filter, next, min(limit-sent, 1000)); err != nil {
			httpx.NoteError(c, fmt.Errorf("event replay interrupted: %w", err))
			_ = bw.Flush()
			panic(http.ErrAbortHandler)
		}
	}
	_ = bw.Flush()
}

// verifyAuditLogs is GET /api/v1/audit-logs/verify: the organization's chain recomputed
// from the event log.
func (h *HTTP) verifyAuditLogs(c *gin.Context) {
	if !allowed(c, rbac.AuditRead) {
		return
	}
	rep, err := eventstore.VerifyChain(c.Request.Context(), h.primary, principal(c).OrganizationID, h.chainKey)
	if err != nil {
		httpx.Fail(c, err)
		return
	}
	msg := "History verified"
	if !rep.OK {
		msg = "History does not match its chain"
	}
	httpx.OK(c, http.StatusOK, msg, rep, nil)
}
