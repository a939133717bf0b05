package httpx

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/secretbox"
)

// IdempotencyTTL is how long a key's first answer is replayed.
const IdempotencyTTL = 24 * time.Hour

// replayedHeaders are the response headers kept with a stored answer.
var replayedHeaders = []string{"Content-Type", "Location", "X-Consistency-Token"}

type capture struct {
	gin.ResponseWriter
	buf bytes.Buffer
}

func (w *capture) Write(b []byte) (int, error) {
	w.buf.Write(b)
	return w.ResponseWriter.Write(b)
}

func (w *capture) WriteString(s string) (int, error) {
	w.buf.WriteString(s)
	return w.ResponseWriter.WriteString(s)
}

// IdempotencyKeys protect what the idempotency table keeps, so that a reader of the
// database learns no secret from it. HashKey keys the request hash (HMAC-SHA256): a body
// may hold a password, and a plain hash of it could be tested against guesses offline.
// Box seals the stored answer, which may carry a credential (a webhook's generated
// secret): only this server can open it to replay it.
type IdempotencyKeys struct {
	HashKey []byte
	Box     *secretbox.Box
}

// Idempotency makes a POST with an Idempotency-Key header answer a repeat (same key,
// same body, same caller) with the first answer, without running the command again.
// scope names the caller: the same key from two callers is two keys. A request still
// running under the key is answered 409; a 5xx answer is not kept, so it can be retried.
// A stored answer that cannot be opened any more (SECRETS_KEY changed) is 409 too.
func Idempotency(pool *pgxpool.Pool, keys IdempotencyKeys, scope func(*gin.Context) string) gin.HandlerFunc {
	return func(c *gin.Context) {
		key := c.GetHeader("Idempotency-Key")
		if c.Request.Method != http.MethodPost || key == "" {
			c.Next()
			return
		}
		if len(key) > 255 || strings.ContainsFunc(key, func(r rune) bool { return r < ' ' || r > '~' }) {
			Fail(c, apperr.Invalid("Idempotency-Key", "must be 1 to 255 printable ASCII characters"))
			return
		}
		body, err := io.ReadAll(c.Request.Body)
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			Fail(c, apperr.New(apperr.CodePayloadTooLarge, fmt.Sprintf("The request body is larger than %d MiB", tooBig.Limit>>20)))
			return
		}
		if err != nil {
			Fail(c, apperr.Wrap(apperr.CodeBadRequest, "The request body could not be read", err))
			return
		}
		c.Request.Body = io.NopCloser(bytes.NewReader(body))
		sc := scope(c) + " " + c.FullPath()
		h := hmac.New(sha256.New, keys.HashKey)
		h.Write([]byte(c.Request.Method + " " + sc + "\n"))
		h.Write(body)
		hash := h.Sum(nil)
		ctx := c.Request.Context()

		claimed, err := claimKey(ctx, pool, sc, key, hash)
		if err != nil {
			Fail(c, err)
			return
		}
		if !claimed {
			replay(c, pool, keys.Box, sc, key, hash)
			return
		}
		w := &capture{ResponseWriter: c.Writer}
		c.Writer = w
		c.Next()
		// Stored even if the client went away: the command's effect is real.
		bg := context.WithoutCancel(ctx)
		if w.Status() >= 500 {
			_, _ = pool.Exec(bg, `DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2`, sc, key)
			return
		}
		headers := map[string]string{}
		for _, name := range replayedHeaders {
			if v := w.Header().Get(name); v != "" {
				headers[name] = v
			}
		}
		hj, _ := json.Marshal(headers)
		sealed := keys.Box.Seal(w.buf.Bytes(), sealContext(sc, key))
		_, _ = pool.Exec(bg, `UPDATE idempotency_keys SET status = $3, headers = $4, body = $5
			WHERE scope = $1 AND key = $2`, sc, key, w.Status(), hj, sealed)
	}
}

// abandonedAfter is when a key still "in progress" is taken to belong to a request that
// died with its process: longer than any request can run (the server's write timeout).
const abandonedAfter = time.Minute

// claimKey inserts the key as in progress; false means it was there already. An expired
// key, or one abandoned in progress, is taken over.
func claimKey(ctx context.Context, pool *pgxpool.Pool, scope, key string, hash []byte) (bool, error) {
	tag, err := pool.Exec(ctx, `INSERT INTO idempotency_keys (scope, key, request_hash) VALUES ($1, $2, $3)
		ON CONFLICT (scope, key) DO UPDATE SET request_hash = excluded.request_hash, status = NULL,
			headers = NULL, body = NULL, created_at = now()
		WHERE idempotency_keys.created_at < now() - $4::interval
		   OR (idempotency_keys.status IS NULL AND idempotency_keys.created_at < now() - $5::interval)`,
		scope, key, hash, IdempotencyTTL.String(), abandonedAfter.String())
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() == 1, nil
}

// sealContext binds a sealed answer to its row: moved to another key, it does not open.
func sealContext(scope, key string) []byte { return []byte("idempotency\x00" + scope + "\x00" + key) }

func replay(c *gin.Context, pool *pgxpool.Pool, box *secretbox.Box, scope, key string, hash []byte) {
	var stored []byte
	var status *int
	var headers map[string]string
	var body []byte
	err := pool.QueryRow(c.Request.Context(), `SELECT request_hash, status, headers, body FROM idempotency_keys
		WHERE scope = $1 AND key = $2`, scope, key).Scan(&stored, &status, &headers, &body)
	if errors.Is(err, pgx.ErrNoRows) {
		Fail(c, apperr.Conflict("A request with this Idempotency-Key was just abandoned; retry"))
		return
	}
	if err != nil {
		Fail(c, err)
		return
	}
	if !hmac.Equal(stored, hash) {
		Fail(c, apperr.Invalid("Idempotency-Key", "was already used with a different request body"))
		return
	}
	if status == nil {
		Fail(c, apperr.Conflict("A request with this Idempotency-Key is still in progress"))
		return
	}
	body, err = box.Open(body, sealContext(scope, key))
	if err != nil {
		Fail(c, apperr.Conflict("The first answer to this Idempotency-Key can no longer be replayed (the server's key changed); use a new key"))
		return
	}
	for k, v := range headers {
		c.Header(k, v)
	}
	c.Header("Idempotent-Replayed", "true")
	c.Data(*status, headers["Content-Type"], body)
	c.Abort()
}
