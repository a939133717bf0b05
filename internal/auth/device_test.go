package auth

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestDeviceTokens(t *testing.T) {
	d := NewDevices([]byte("0123456789abcdef0123456789abcdef"))
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	d.now = func() time.Time { return now }
	tok := d.Issue("ann@example.com")
	id, ok := d.Check(tok, "ann@example.com")
	assert.True(t, ok)
	assert.Len(t, id, 22)
	other, _ := d.Check(d.Issue("ann@example.com"), "ann@example.com")
	assert.NotEqual(t, id, other, "each login gets its own device id")
	mac := strings.LastIndex(tok, ".") + 1
	// The mac's last character carries 4 bits and 2 that the encoder leaves at zero: set
	// those, and a lenient decoder reads the same mac from another token.
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, tok[len(tok)-1])
	reencoded := tok[:len(tok)-1] + alphabet[last+1:last+2]

	for name, bad := range map[string]struct{ token, email string }{
		"another email":  {tok, "bob@example.com"},
		"empty":          {"", "ann@example.com"},
		"no prefix":      {strings.TrimPrefix(tok, "dv1."), "ann@example.com"},
		"forged mac":     {tok[:mac] + flip(tok[mac:mac+1]) + tok[mac+1:], "ann@example.com"},
		"mac re-encoded": {reencoded, "ann@example.com"},
		"body changed":   {"dv1." + flip(tok[4:5]) + tok[5:], "ann@example.com"},
		"another key":    {NewDevices([]byte("another key, another server.....")).Issue("ann@example.com"), "ann@example.com"},
		"no mac":         {"dv1.abc", "ann@example.com"},
		"garbage base64": {"dv1.!!!.???", "ann@example.com"},
	} {
		_, ok := d.Check(bad.token, bad.email)
		assert.False(t, ok, name)
	}
	now = now.Add(DeviceTokenTTL)
	_, ok = d.Check(tok, "ann@example.com")
	assert.False(t, ok, "expired")
	var none *Devices
	_, ok = none.Check(tok, "ann@example.com")
	assert.False(t, ok, "no device tokens configured")
}

// flip returns another base64url character than c.
func flip(c string) string {
	if c == "A" {
		return "B"
	}
	return "A"
}
