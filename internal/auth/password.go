// Package auth is credentials and access control shared by the command and query sides:
// password hashing, access and refresh tokens, the permission catalog and built-in
// roles, and the middleware that turns a bearer token into a Principal.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/argon2"
)

// OWASP's argon2id recommendation: 19 MiB, 2 passes, 1 lane.
const (
	argonMemoryKiB = 19 * 1024
	argonTime      = 2
	argonThreads   = 1
	argonKeyLen    = 32
	argonSaltLen   = 16
)

// Hasher hashes and verifies passwords with argon2id, at most n at a time: each hash
// takes 19 MiB, so a login storm waits instead of exhausting memory.
type Hasher struct {
	slots chan struct{}
	dummy string

	// giveBackAfter is how long hashing must pause before its memory is returned.
	giveBackAfter time.Duration
	giving        atomic.Bool
}

// NewHasher returns a hasher that runs at most concurrency hashes at once.
// Zero is one per core: a hash (one lane) is a core's work, and running more at once than
// there are cores only holds more 19 MiB buffers while they wait for one (on 2 cores, 4
// at once cost a third of the throughput under a soft memory limit and 45 MiB more).
func NewHasher(concurrency int) *Hasher {
	if concurrency <= 0 {
		concurrency = runtime.GOMAXPROCS(0)
	}
	return newHasher(concurrency, time.Second)
}

func newHasher(concurrency int, giveBackAfter time.Duration) *Hasher {
	h := &Hasher{slots: make(chan struct{}, concurrency), giveBackAfter: giveBackAfter}
	h.dummy = h.encode([]byte("not a real password, only for timing"), make([]byte, argonSaltLen))
	h.giveBack()
	return h
}

// giveBack returns the hashes' memory to the operating system once hashing pauses. Each
// hash allocates 19 MiB in one piece; the collector frees it, but the runtime keeps it
// mapped for minutes, and after a few logins that is most of an idle server's resident
// memory. It runs at most once per giveBackAfter, and not while anything is hashing (a
// stream of logins reuses the freed memory instead).
func (h *Hasher) giveBack() {
	if !h.giving.CompareAndSwap(false, true) {
		return
	}
	time.AfterFunc(h.giveBackAfter, func() {
		h.giving.Store(false)
		if len(h.slots) == 0 {
			debug.FreeOSMemory()
		}
	})
}

func (h *Hasher) acquire(ctx context.Context) error {
	select {
	case h.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *Hasher) release() {
	<-h.slots
	if len(h.slots) == 0 {
		h.giveBack()
	}
}

func (h *Hasher) encode(password, salt []byte) string {
	key := argon2.IDKey(password, salt, argonTime, argonMemoryKiB, argonThreads, argonKeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemoryKiB, argonTime, argonThreads,
		b64.EncodeToString(salt), b64.EncodeToString(key))
}

// Hash returns the PHC string of password with a fresh salt.
func (h *Hasher) Hash(ctx context.Context, password string) (string, error) {
	if err := h.acquire(ctx); err != nil {
		return "", err
	}
	defer h.release()
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	return h.encode([]byte(password), salt), nil
}

// Verify reports whether password matches encoded. An empty encoded (no such user) is
// checked against a dummy hash, so that the answer takes as long either way.
func (h *Hasher) Verify(ctx context.Context, encoded, password string) (bool, error) {
	real := encoded != ""
	if !real {
		encoded = h.dummy
	}
	var version, mem, t, p int
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false, errors.New("unsupported password hash")
	}
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil {
		return false, err
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &mem, &t, &p); err != nil {
		return false, err
	}
	salt, err := base64.RawStdEncoding.DecodeString(parts[4])
	if err != nil {
		return false, err
	}
	want, err := base64.RawStdEncoding.DecodeString(parts[5])
	if err != nil {
		return false, err
	}
	if err := h.acquire(ctx); err != nil {
		return false, err
	}
	defer h.release()
	got := argon2.IDKey([]byte(password), salt, uint32(t), uint32(mem), uint8(p), uint32(len(want)))
	return real && subtle.ConstantTimeCompare(got, want) == 1, nil
}
