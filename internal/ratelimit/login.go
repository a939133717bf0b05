package ratelimit

import (
	"context"
	"time"
)

// LoginThrottle counts failed logins per (client IP, email) and per email across IPs.
// Only failures count, and only against the email tried, so one user's mistakes (or an
// attack on them) never slow anyone else's login.
type LoginThrottle struct {
	l          *Limiter
	perIPEmail Limit
	perEmail   Limit
}

// NewLoginThrottle allows perIPEmail failures a minute from one IP for one email, and
// perEmail failures a minute for one email from anywhere.
func NewLoginThrottle(l *Limiter, perIPEmail, perEmail int) *LoginThrottle {
	return &LoginThrottle{l: l, perIPEmail: PerMinute(perIPEmail), perEmail: PerMinute(perEmail)}
}

// Blocked reports whether another attempt for email from ip is refused, and for how long.
func (t *LoginThrottle) Blocked(ctx context.Context, ip, email string) (time.Duration, bool) {
	if d := t.l.Peek(ctx, "login:ip:"+ip+":"+email, t.perIPEmail); !d.Allowed {
		return d.RetryAfter, true
	}
	if d := t.l.Peek(ctx, "login:email:"+email, t.perEmail); !d.Allowed {
		return d.RetryAfter, true
	}
	return 0, false
}

// Failed counts one failed attempt.
func (t *LoginThrottle) Failed(ctx context.Context, ip, email string) {
	t.l.Take(ctx, "login:ip:"+ip+":"+email, t.perIPEmail)
	t.l.Take(ctx, "login:email:"+email, t.perEmail)
}
