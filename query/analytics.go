package query

import (
	"errors"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/httpx"
	"github.com/chatbotsaas/chatbotd/internal/rbac"
)

// Overview is GET /api/v1/analytics/overview's data. Messages are the users' messages;
// replies the chatbot's answers; failed the messages that could not be answered. A
// reply's time runs from its message's post to its answer. Each figure is counted on the
// UTC day its event happened.
type Overview struct {
	From          string         `json:"from"`
	To            string         `json:"to"`
	ChatbotID     *uuid.UUID     `json:"chatbot_id"`
	Conversations int64          `json:"conversations"`
	Messages      int64          `json:"messages"`
	Replies       int64          `json:"replies"`
	Failed        int64          `json:"failed"`
	FailedByCode  map[string]int `json:"failed_by_code"`
	AvgReplyMS    *float64       `json:"avg_reply_ms"`
	P95ReplyMS    *int64         `json:"p95_reply_ms"`
	PerDay        []DayFigures   `json:"per_day"`
}

// DayFigures is one UTC day of the overview.
type DayFigures struct {
	Date          string `json:"date"`
	Conversations int64  `json:"conversations"`
	Messages      int64  `json:"messages"`
	Replies       int64  `json:"replies"`
	Failed        int64  `json:"failed"`
}

const (
	dayLayout        = "2006-01-02"
	defaultRangeDays = 30
	maxRangeDays     = 366
)

// dayParam reads a day as YYYY-MM-DD, or the UTC day of an RFC 3339 time.
func dayParam(c *gin.Context, f apperr.Fields, name string) *time.Time {
	v := c.Query(name)
	if v == "" {
		return nil
	}
	if d, err := time.Parse(dayLayout, v); err == nil {
		return &d
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		f.Add(name, "must be a date (2026-01-27) or an RFC 3339 time")
		return nil
	}
	d := t.UTC().Truncate(24 * time.Hour)
	return &d
}

// analyticsOverview is GET /api/v1/analytics/overview?from=&to=&chatbot_id=: the
// organization's (or one chatbot's) figures over the days from..to, both included (by
// default the last 30 days), with a figure for every day of the range.
func (h *HTTP) analyticsOverview(c *gin.Context) {
	if !allowed(c, rbac.AnalyticsRead) {
		return
	}
	f := apperr.Fields{}
	today := time.Now().UTC().Truncate(24 * time.Hour)
	from, to := dayParam(c, f, "from"), dayParam(c, f, "to")
	if to == nil {
		to = &today
	}
	if from == nil {
		d := to.AddDate(0, 0, 1-defaultRangeDays)
		from = &d
	}
	var chatbot *uuid.UUID
	if v := c.Query("chatbot_id"); v != "" {
		id, err := uuid.Parse(v)
		if err != nil {
			f.Add("chatbot_id", "must be a UUID")
		}
		chatbot = &id
	}
	if len(f) == 0 {
		switch days := int(to.Sub(*from).Hours()/24) + 1; {
		case days < 1:
			f.Add("from", "must not be after to")
		case days > maxRangeDays:
			f.Add("to", "the range is at most 366 days")
		}
	}
	if err := f.Err(); err != nil {
		httpx.Fail(c, err)
		return
	}
	ctx := c.Request.Context()
	org := principal(c).OrganizationID
	if chatbot != nil {
		// A deleted chatbot keeps its figures; another organization's is not found.
		var one int
		err := h.read.QueryRow(ctx, byID("chatbots", "1", "true"), *chatbot, org).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			httpx.Fail(c, apperr.NotFound("chatbot"))
			return
		}
		if err != nil {
			httpx.Fail(c, err)
			return
		}
	}
	// Every filter is a prefix of the tables' keys: (organization_id, day, chatbot_id).
	args := []any{org, *from, *to, chatbot}
	const filter = `organization_id = $1 AND day BETWEEN $2 AND $3 AND ($4::uuid IS NULL OR chatbot_id = $4)`
	out := Overview{From: from.Format(dayLayout), To: to.Format(dayLayout), ChatbotID: chatbot, FailedByCode: map[string]int{}}
	batch := &pgx.Batch{}
	batch.Queue(`SELECT d::date, coalesce(sum(a.conversations), 0), coalesce(sum(a.messages), 0),
		coalesce(sum(a.replies), 0), coalesce(sum(a.failed), 0), coalesce(sum(a.reply_ms_sum), 0)
		FROM generate_series($2::date, $3::date, interval '1 day') AS d
		LEFT JOIN analytics_daily a ON a.day = d::date AND a.organization_id = $1 AND ($4::uuid IS NULL OR a.chatbot_id = $4)
		GROUP BY d ORDER BY d`, args...)
	batch.Queue(`SELECT code, sum(failed) FROM analytics_failures WHERE `+filter+` GROUP BY code`, args...)
	batch.Queue(`SELECT percentile_disc(0.95) WITHIN GROUP (ORDER BY reply_ms) FROM analytics_replies
		WHERE organization_id = $1 AND replied_day BETWEEN $2 AND $3 AND ($4::uuid IS NULL OR chatbot_id = $4)`, args...)
	res := h.read.SendBatch(ctx, batch)
	defer res.Close()
	rows, err := res.Query()
	if err != nil {
		httpx.Fail(c, err)
		return
	}
	var replyMS int64
	for rows.Next() {
		var d time.Time
		var day DayFigures
		var ms int64
		if err := rows.Scan(&d, &day.Conversations, &day.Messages, &day.Replies, &day.Failed, &ms); err != nil {
			rows.Close()
			httpx.Fail(c, err)
			return
		}
		day.Date = d.Format(dayLayout)
		out.PerDay = append(out.PerDay, day)
		out.Conversations += day.Conversations
		out.Messages += day.Messages
		out.Replies += day.Replies
		out.Failed += day.Failed
		replyMS += ms
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		httpx.Fail(c, err)
		return
	}
	if rows, err = res.Query(); err != nil {
		httpx.Fail(c, err)
		return
	}
	for rows.Next() {
		var code string
		var n int
		if err := rows.Scan(&code, &n); err != nil {
			rows.Close()
			httpx.Fail(c, err)
			return
		}
		out.FailedByCode[code] = n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		httpx.Fail(c, err)
		return
	}
	if err := res.QueryRow().Scan(&out.P95ReplyMS); err != nil {
		httpx.Fail(c, err)
		return
	}
	if out.Replies > 0 {
		avg := float64(replyMS) / float64(out.Replies)
		out.AvgReplyMS = &avg
	}
	httpx.OK(c, http.StatusOK, "Analytics overview", out, nil)
}
