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
		// Where the read models are on the primary, the owner's look reads the projection's
		// version too, and the wait is registered before it (readmodel.Watch).
		var watch *readmodel.Watch
		look := ""
		if h.readsPrimary {
			look, watch = projection, h.applied.Watch(h.read, projection, tok.StreamID, tok.Version)
		}
		mine, seen, looked, err := h.streams.belongs(ctx, h.primary, principal(c), tok.StreamID, tok.Version, look)
		// A write applied already: the look says so, and the read takes no turn and waits
		// for nothing. Otherwise the wait goes on from that look, which was its first.
		reached := looked && seen >= tok.Version
		if err != nil || !mine || !looked || reached {
			watch.Stop()
		}
		if err != nil {
			httpx.Fail(c, err)
			return
		}
		if !mine {
			httpx.Fail(c, apperr.New(apperr.CodeBadRequest, "X-Consistency-Token names no write of your organization"))
			return
		}
		if !reached {
			select {
			case h.waits <- struct{}{}:
				if looked {
					reached, err = watch.WaitAfter(ctx, seen)
				} else {
					reached, err = h.applied.WaitApplied(ctx, h.read, projection, tok.StreamID, tok.Version)
				}
				<-h.waits
				if err != nil {
					httpx.Fail(c, err)
					return
				}
			case <-ctx.Done():
				watch.Stop()
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
// the version projection has applied of the stream: applied, and looked is true (applied
// is 0 when the projection has none of it, and looked false whenever the stream is not
// p's). One round trip where the owner's and the wait's first look took two. Only where
// the read models are on the primary (no replica): a read must wait for the projection
// where it reads.
func (s streamOwners) belongs(ctx context.Context, primary *pgxpool.Pool, p auth.Principal, stream uuid.UUID, version int,
	projection string) (mine bool, applied int, looked bool, err error) {
	if p.Can(rbac.PlatformOperate) {
		return true, 0, false, nil
	}
	if org, ok := s.m.Get(stream); ok {
		return org == p.OrganizationID, 0, false, nil
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
		return false, 0, false, nil
	}
	if err != nil {
		return false, 0, false, err
	}
	s.m.Put(stream, *owner)
	if *owner != p.OrganizationID {
		return false, 0, false, nil
	}
	if at != nil {
		applied = *at
	}
	return true, applied, projection != "", nil
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
