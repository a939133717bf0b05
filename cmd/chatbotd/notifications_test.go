package main

import (
	"context"
	"fmt"
	"io"
	"mime"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// smtpSink is an SMTP server that keeps every message it is given.
type smtpSink struct {
	addr string
	mu   sync.Mutex
	got  []sunkMail
}

type sunkMail struct {
	from, to string
	msg      *mail.Message
	body     string
}

func (s *smtpSink) NewSession(*smtp.Conn) (smtp.Session, error) { return &sinkSession{sink: s}, nil }

type sinkSession struct {
	sink     *smtpSink
	from, to string
}

func (s *sinkSession) Reset()        {}
func (s *sinkSession) Logout() error { return nil }
func (s *sinkSession) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	return nil
}
func (s *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = to
	return nil
}
func (s *sinkSession) Data(r io.Reader) error {
	msg, err := mail.ReadMessage(r)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(msg.Body) // quoted-printable, as sent
	if err != nil {
		return err
	}
	s.sink.mu.Lock()
	s.sink.got = append(s.sink.got, sunkMail{from: s.from, to: s.to, msg: msg, body: string(body)})
	s.sink.mu.Unlock()
	return nil
}

func (s *smtpSink) mails() []sunkMail {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sunkMail(nil), s.got...)
}

func startSMTP(t *testing.T) *smtpSink {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	sink := &smtpSink{addr: ln.Addr().String()}
	srv := smtp.NewServer(sink)
	srv.Domain = "localhost"
	srv.AllowInsecureAuth = true
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return sink
}

func subject(t *testing.T, m sunkMail) string {
	s, err := new(mime.WordDecoder).DecodeHeader(m.msg.Header.Get("Subject"))
	require.NoError(t, err)
	return s
}

func TestEmailNotificationsOverSMTPOncePerEvent(t *testing.T) {
	sink := startSMTP(t)
	a := startApp(t, "SMTP_URL=smtp://"+sink.addr, "SMTP_FROM=Chatbot SaaS <no-reply@chatbot.example>")
	_, token := a.register("Mailed", "Mo Owner", "mo@mailed.example")
	u, _ := a.createUser(token, "Zoë Member", "zoe@mailed.example", "member", nil)

	byTo := func(to string) []sunkMail {
		var out []sunkMail
		for _, m := range sink.mails() {
			if m.to == to {
				out = append(out, m)
			}
		}
		return out
	}
	wait := func(to string, n int) []sunkMail {
		t.Helper()
		testenv.Eventually(t, 15*time.Second, func() error {
			if got := len(byTo(to)); got != n {
				return fmt.Errorf("%d of %d emails to %s", got, n, to)
			}
			return nil
		})
		return byTo(to)
	}
	// A welcome email for the new user (and one for the owner, who registered).
	welcome := wait("zoe@mailed.example", 1)[0]
	wait("mo@mailed.example", 1)
	assert.Equal(t, "no-reply@chatbot.example", welcome.from)
	assert.Equal(t, "Welcome to chatbotd", subject(t, welcome))
	to, err := welcome.msg.Header.AddressList("To")
	require.NoError(t, err)
	assert.Equal(t, []*mail.Address{{Name: "Zoë Member", Address: "zoe@mailed.example"}}, to)
	assert.Contains(t, welcome.body, "Zo=C3=AB Member")
	assert.Contains(t, welcome.msg.Header.Get("Message-ID"), "@chatbotd>")

	// A role change and a password change each give one notice.
	a.expect(req{method: "PUT", path: "/api/v1/users/" + u.ID + "/roles/admin", token: token}, 200)
	zoe := a.login("zoe@mailed.example", "password1").AccessToken
	a.expectError(req{method: "PUT", path: "/api/v1/auth/password", token: zoe,
		body: map[string]string{"current_password": "wrong-password", "password": "new-password-2", "password_confirmation": "new-password-2"}},
		422, "VALIDATION_ERROR")
	a.expect(req{method: "PUT", path: "/api/v1/auth/password", token: zoe,
		body: map[string]string{"current_password": "password1", "password": "new-password-2", "password_confirmation": "new-password-2"}}, 200)
	mails := wait("zoe@mailed.example", 3)
	subjects := []string{subject(t, mails[0]), subject(t, mails[1]), subject(t, mails[2])}
	assert.ElementsMatch(t, []string{"Welcome to chatbotd", "Your role changed", "Your password was changed"}, subjects)
	for _, m := range mails[1:] {
		if subject(t, m) == "Your role changed" {
			assert.Contains(t, m.body, `given the role "admin"`)
		}
	}
	// The new password works, the old one does not.
	a.login("zoe@mailed.example", "new-password-2")
	a.expectError(req{method: "POST", path: "/api/v1/auth/login", body: map[string]string{"email": "zoe@mailed.example", "password": "password1"}},
		401, "UNAUTHENTICATED")

	// Every event published again, straight to the notifications queue: no second email.
	hist, _, err := eventstore.ReadHistory(context.Background(), a.db.Pool, eventstore.HistoryFilter{TypePatterns: []string{"user.*"}},
		eventstore.Checkpoint{}, 1000)
	require.NoError(t, err)
	a.redeliver("notifications", hist)
	// A marker after them: once its email is in, the duplicates were handled.
	a.createUser(token, "Marker", "marker@mailed.example", "member", nil)
	wait("marker@mailed.example", 1)
	assert.Len(t, byTo("zoe@mailed.example"), 3)
	assert.Len(t, byTo("mo@mailed.example"), 1)
	// The mailer records "sent" after the server took the email, so the marker's row may
	// lag its arrival by a moment.
	var sent int
	assert.Eventually(t, func() bool {
		require.NoError(t, a.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM notifications WHERE status = 'sent'`).Scan(&sent))
		return sent == 5
	}, 5*time.Second, 20*time.Millisecond, "sent: %d", sent)
	time.Sleep(200 * time.Millisecond) // and no sixth comes after
	require.NoError(t, a.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM notifications`).Scan(&sent))
	assert.Equal(t, 5, sent, "one notification per event, duplicates included")
}

// Without SMTP_URL, emails are written to the log, and never lost or sent twice.
func TestEmailNotificationsAreLoggedWithoutSMTP(t *testing.T) {
	a := startApp(t)
	_, token := a.register("Logged", "Lu", "lu@logged.example")
	a.createUser(token, "Lia", "lia@logged.example", "member", nil)
	testenv.Eventually(t, 15*time.Second, func() error {
		var n int
		if err := a.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM notifications
			WHERE status = 'logged' AND to_address = 'lia@logged.example' AND kind = 'welcome'`).Scan(&n); err != nil || n != 1 {
			return fmt.Errorf("%d logged (%v)", n, err)
		}
		return nil
	})
	assert.True(t, strings.Contains(a.logs(), `"to":"lia@logged.example"`), "the email is in the log")
}
