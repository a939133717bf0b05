package ratelimit

import (
	"fmt"
	"math"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/httpx"
)

// Middleware limits requests by the key keyOf returns; an empty key is not limited. It
// sets X-RateLimit-Limit and X-RateLimit-Remaining, and answers 429 RATE_LIMITED with
// Retry-After when the limit is reached.
func (l *Limiter) Middleware(lim Limit, keyOf func(*gin.Context) string) gin.HandlerFunc {
	return func(c *gin.Context) {
		key := keyOf(c)
		if key == "" {
			c.Next()
			return
		}
		d := l.Take(c.Request.Context(), key, lim)
		if !d.Allowed && c.Request.Context().Err() != nil {
			// The client left (or the server is stopping) while the key waited for
			// Redis: nothing was counted.
			httpx.ClientGone(c)
			return
		}
		c.Header("X-RateLimit-Limit", strconv.Itoa(d.Limit))
		c.Header("X-RateLimit-Remaining", strconv.Itoa(d.Remaining))
		if !d.Allowed {
			httpx.Fail(c, Limited(d))
			return
		}
		c.Next()
	}
}

// Limited is the RATE_LIMITED error of a refused decision.
func Limited(d Decision) error {
	secs := int(math.Ceil(d.RetryAfter.Seconds()))
	return &apperr.Error{Code: apperr.CodeRateLimited,
		Message: fmt.Sprintf("Too many requests; retry in %d s", max(secs, 1)), RetryAfter: d.RetryAfter}
}
