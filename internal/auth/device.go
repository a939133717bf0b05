package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"strings"
	"time"
)

// DeviceTokenTTL is how long a device token is trusted after the login that issued it.
const DeviceTokenTTL = 90 * 24 * time.Hour

// devicePrefix starts every device token (the format's version).
const devicePrefix = "dv1."

// Devices issues and checks device tokens: proof that a client once logged in
// successfully as an email address (OWASP's "device cookies" against lockout attacks).
// A login that presents a valid one for its email is not refused by the per-email
// failure limit, which anyone can fill from many addresses; its own failures count
// against the token instead. A token names no user and holds no secret of theirs: it is
// a random id, an expiry and an HMAC over both and the email, under a server key.
type Devices struct {
	key []byte
	now func() time.Time
}

// NewDevices returns device tokens keyed by key (at least 32 bytes, kept out of the
// database: whoever has it can exempt any client from the per-email limit).
func NewDevices(key []byte) *Devices {
	return &Devices{key: key, now: time.Now}
}

// Issue returns a new device token for email (normalized as logins compare it).
func (d *Devices) Issue(email string) string {
	var body [24]byte
	_, _ = rand.Read(body[:16])
	binary.BigEndian.PutUint64(body[16:], uint64(d.now().Add(DeviceTokenTTL).Unix()))
	return devicePrefix + base64.RawURLEncoding.EncodeToString(body[:]) + "." +
		base64.RawURLEncoding.EncodeToString(d.mac(body[:], email))
}

// Check returns the token's id when it is a valid, unexpired device token for email;
// ok is false for anything else (empty, malformed, forged, expired, another email's).
func (d *Devices) Check(token, email string) (id string, ok bool) {
	rest, found := strings.CutPrefix(token, devicePrefix)
	if !found || d == nil {
		return "", false
	}
	b64body, b64mac, found := strings.Cut(rest, ".")
	if !found {
		return "", false
	}
	// Strict: one token has one spelling (a lenient decoder ignores the last character's
	// unused bits, so four spellings of each token would pass).
	body, err1 := base64.RawURLEncoding.Strict().DecodeString(b64body)
	mac, err2 := base64.RawURLEncoding.Strict().DecodeString(b64mac)
	if err1 != nil || err2 != nil || len(body) != 24 || !hmac.Equal(mac, d.mac(body, email)) {
		return "", false
	}
	if d.now().Unix() >= int64(binary.BigEndian.Uint64(body[16:])) {
		return "", false
	}
	return base64.RawURLEncoding.EncodeToString(body[:16]), true // the random part
}

func (d *Devices) mac(body []byte, email string) []byte {
	h := hmac.New(sha256.New, d.key)
	h.Write([]byte("chatbotd device token\x00"))
	h.Write(body)
	h.Write([]byte{0})
	h.Write([]byte(email))
	return h.Sum(nil)
}
