package ratelimit

import (
	"context"
	"time"
)

// LoginThrottle counts failed password checks (logins, and a signed-in user's wrong
// current password) per (client IP, email), per email across IPs, and per device token.
// Only failures count, and only against the email tried.
//
// The per-email limit is the one anyone can fill for someone else's email, from many
// addresses. So a client that presents a device token (proof of an earlier successful
// login as that email) is never refused by it: such a client is limited per (IP, email)
// and per device token, by its own failures only. A client without one (a new device)
// can still be held back for up to a minute by somebody else's failures.
type LoginThrottle struct {
	l          *Limiter
	perIPEmail Limit
	perEmail   Limit
}

// NewLoginThrottle allows perIPEmail failures a minute from one IP (and from one device
// token) for one email, and perEmail failures a minute for one email from anywhere.
func NewLoginThrottle(l *Limiter, perIPEmail, perEmail int) *LoginThrottle {
	return &LoginThrottle{l: l, perIPEmail: PerMinute(perIPEmail), perEmail: PerMinute(perEmail)}
}

// Blocked reports whether another attempt for email from ip is refused, and for how long.
// device is the id of a valid device token for email that the client presented, or "".
func (t *LoginThrottle) Blocked(ctx context.Context, ip, email, device string) (time.Duration, bool) {
	if d := t.l.Peek(ctx, "login:ip:"+ip+":"+email, t.perIPEmail); !d.Allowed {
		return d.RetryAfter, true
	}
	if device != "" {
		if d := t.l.Peek(ctx, "login:device:"+device, t.perIPEmail); !d.Allowed {
			return d.RetryAfter, true
		}
		return 0, false
	}
	if d := t.l.Peek(ctx, "login:email:"+email, t.perEmail); !d.Allowed {
		return d.RetryAfter, true
	}
	return 0, false
}

// Failed counts one failed attempt. A failure with a device token counts against that
// token, not against the email: a user's own typos on a known device never hold back
// their other devices.
func (t *LoginThrottle) Failed(ctx context.Context, ip, email, device string) {
	t.l.Take(ctx, "login:ip:"+ip+":"+email, t.perIPEmail)
	if device != "" {
		t.l.Take(ctx, "login:device:"+device, t.perIPEmail)
		return
	}
	t.l.Take(ctx, "login:email:"+email, t.perEmail)
}

// Record reports whether a refusal for email should be recorded as an event: at most one
// a minute per email, so that an attacker hammering a blocked email cannot grow the
// permanent log by one event per request.
func (t *LoginThrottle) Record(ctx context.Context, email string) bool {
	return t.l.Take(ctx, "login:refused:"+email, PerMinute(1)).Allowed
}
