package query

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/auth"
	"github.com/chatbotsaas/chatbotd/internal/bounded"
	"github.com/chatbotsaas/chatbotd/internal/httpx"
	"github.com/chatbotsaas/chatbotd/internal/rbac"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
)

// Consistency honours X-Consistency-Token on reads: the request waits (up to 5 s) until
// the projection that applies the token's stream has reached its version. It runs after
// authentication and the rate limit (an anonymous or throttled caller makes nobody
// wait), and only for a stream of the caller's organization: a token naming any other
// stream, another tenant's or one that does not exist, is the same 400, so it tells
// nothing about other tenants. At most maxWaits requests wait at once in one process;
// one that gets no turn before its deadline answers at once, marked X-Consistency:
// timeout, like a wait that ran out.
func (h *HTTP) Consistency() gin.HandlerFunc {
	return func(c *gin.Context) {
		raw := c.GetHeader(httpx.ConsistencyTokenHeader)
		if raw == "" || (c.Request.Method != http.MethodGet && c.Request.Method != http.MethodHead) {
			c.Next()
			return
		}
		tok, err := events.ParseToken(raw)
		if err != nil {
			httpx.Fail(c, apperr.New(apperr.CodeBadRequest, "X-Consistency-Token: "+err.Error()))
			return
		}
		projection, ok := h.projectionOf[tok.StreamType]
		switch {
		case strings.HasPrefix(c.FullPath(), "/api/v1/audit-logs"):
			// Every stream is audited: the token waits for the audit trail instead.
			projection, ok = readmodel.AuditProjection, true
		case strings.HasPrefix(c.FullPath(), "/api/v1/analytics"):
			projection = readmodel.AnalyticsProjection
		}
		if !ok || tok.Version == 0 {
			c.Next()
			return
		}
		ctx, cancel := context.WithTimeout(c.Request.Context(), h.consistencyWait)
		defer cancel()
		look := ""
		if h.readsPrimary {
			look = projection
		}
		mine, applied, err := h.streams.belongs(ctx, h.primary, principal(c), tok.StreamID, tok.Version, look)
		if err != nil {
			httpx.Fail(c, err)
			return
		}
		if !mine {
			httpx.Fail(c, apperr.New(apperr.CodeBadRequest, "X-Consistency-Token names no write of your organization"))
			return
		}
		// Most reads with a token come after their write is applied: the look that came
		// with the owner's then says so, and the read waits for nothing.
		reached := applied >= tok.Version
		if !reached {
			select {
			case h.waits <- struct{}{}:
				reached, err = h.applied.WaitApplied(ctx, h.read, projection, tok.StreamID, tok.Version)
				<-h.waits
				if err != nil {
					httpx.Fail(c, err)
					return
				}
			case <-ctx.Done():
			}
		}
		if !reached {
			c.Header("X-Consistency", "timeout")
		}
		c.Set(awaitedKey, tok)
		c.Next()
	}
}

// maxWaits bounds the consistency waits of one process: each looks at the read model
// every 100 ms (every 2 to 50 ms while notifications are down).
const maxWaits = 128

// streamOwners remembers which organization each stream a token named belongs to (a
// stream never changes organization), so that a read with a token costs one look at the
// log per stream, not per request. The look is at the log on the primary, not at a read
// model: the command that returned the token committed there before it answered.
type streamOwners struct {
	m *bounded.Map[uuid.UUID, uuid.UUID]
}

const maxStreamOwners = 10000

// belongs reports whether stream, at version, is a stream of p's organization (any
// stream, for a platform operator, whose commands act on other organizations).
//
// When the owner is read from the log and projection is not "", the same statement reads
// the version projection has applied of the stream (applied; 0 otherwise, and whenever the
// stream is not p's): one round trip where the owner's and the wait's first look took two.
// Only where the read models are on the primary (no replica): a read must wait for the
// projection where it reads.
func (s streamOwners) belongs(ctx context.Context, primary *pgxpool.Pool, p auth.Principal, stream uuid.UUID, version int,
	projection string) (mine bool, applied int, err error) {
	if p.Can(rbac.PlatformOperate) {
		return true, 0, nil
	}
	if org, ok := s.m.Get(stream); ok {
		return org == p.OrganizationID, 0, nil
	}
	var owner *uuid.UUID
	var at *int
	if projection == "" {
		err = primary.QueryRow(ctx, `SELECT organization_id FROM events WHERE stream_id = $1 AND stream_version = $2`,
			stream, version).Scan(&owner)
	} else {
		err = primary.QueryRow(ctx, `SELECT e.organization_id,
				(SELECT ps.version FROM projection_streams ps WHERE ps.projection = $3 AND ps.stream_id = e.stream_id)
			FROM events e WHERE e.stream_id = $1 AND e.stream_version = $2`, stream, version, projection).Scan(&owner, &at)
	}
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && owner == nil) {
		return false, 0, nil
	}
	if err != nil {
		return false, 0, err
	}
	s.m.Put(stream, *owner)
	if *owner != p.OrganizationID {
		return false, 0, nil
	}
	if at != nil {
		applied = *at
	}
	return true, applied, nil
}

// sameDatabase reports whether two pools reach the same database: configured with the
// same connection string (DATABASE_READ_URL unset or equal to DATABASE_URL).
func sameDatabase(a, b *pgxpool.Pool) bool {
	return a == b || (a != nil && b != nil && a.Config().ConnString() == b.Config().ConnString())
}

const awaitedKey = "consistency_token"

// awaited is the stream version the request's consistency token waited for, when the
// token names stream (0 otherwise): a reader through a cache must not answer older.
func awaited(c *gin.Context, stream uuid.UUID) int {
	if v, ok := c.Get(awaitedKey); ok {
		if tok, ok := v.(events.AppendResult); ok && tok.StreamID == stream {
			return tok.Version
		}
	}
	return 0
}
