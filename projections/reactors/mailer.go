package reactors

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/url"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatbotsaas/chatbotd/internal/metrics"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
)

// SMTP is where the Mailer sends, parsed from SMTP_URL:
//
//	smtps://user:password@host:465   TLS from the start
//	smtp://user:password@host:587    STARTTLS, required (the server must offer it)
//	smtp://host:25?tls=none          no TLS: only without credentials, or to a loopback host
//
// A loopback host (a local relay, tests) needs no TLS.
type SMTP struct {
	Addr     string
	Host     string
	Implicit bool // smtps
	NoTLS    bool
	Username string
	Password string
}

// ParseSMTPURL parses SMTP_URL.
func ParseSMTPURL(raw string) (*SMTP, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "smtp" && u.Scheme != "smtps") {
		return nil, errors.New("SMTP_URL must be smtp://[user:password@]host[:port] or smtps://...")
	}
	s := &SMTP{Host: u.Hostname(), Implicit: u.Scheme == "smtps"}
	port := u.Port()
	if port == "" {
		port = map[bool]string{true: "465", false: "587"}[s.Implicit]
	}
	s.Addr = net.JoinHostPort(s.Host, port)
	if u.User != nil {
		s.Username = u.User.Username()
		s.Password, _ = u.User.Password()
	}
	ip := net.ParseIP(s.Host)
	loopback := s.Host == "localhost" || (ip != nil && ip.IsLoopback())
	s.NoTLS = !s.Implicit && (u.Query().Get("tls") == "none" || loopback)
	if s.NoTLS && s.Username != "" && !loopback {
		return nil, errors.New("SMTP_URL: credentials are never sent without TLS (remove tls=none)")
	}
	return s, nil
}

// Mailer sends the emails the Notifications projector writes, over SMTP, or writes them
// to the log when SMTP is nil (development). Like the webhook deliverer it leases what
// it sends and keeps no transaction open over the network. A failed send is retried
// after RetryBase, doubling, up to Attempts times. Each email carries the causing
// event's id as its Message-ID: a mailer that dies between sending and recording sends
// again, and mail systems drop the second copy by that id.
type Mailer struct {
	Pool      *pgxpool.Pool
	SMTP      *SMTP
	From      string
	Timeout   time.Duration
	Attempts  int
	RetryBase time.Duration
	Workers   int // sends at once
	Logger    *slog.Logger
	Metrics   *metrics.Metrics
}

type pendingEmail struct {
	id                               uuid.UUID
	kind, toName, toAddress, subject string
	body, correlationID              string
	attempt                          int
}

// emailLeaseMargin is how much longer than a send's timeout a claim's lease runs.
const emailLeaseMargin = time.Minute

// Run sends until ctx ends, on the outbox runtime (Workers sends at once).
func (m *Mailer) Run(ctx context.Context) error {
	outbox[pendingEmail, sentEmail]{name: "emails", pool: m.Pool, work: readmodel.EmailsWork,
		nextDue: `SELECT min(next_attempt_at) FROM notifications WHERE status = 'pending' AND next_attempt_at > now()`,
		workers: m.Workers, hold: emailLeaseMargin, claim: m.claim, call: m.call, record: m.record, logger: m.Logger}.run(ctx)
	return nil
}

type sentEmail struct {
	p   pendingEmail
	err error
}

// claim leases up to n due emails.
func (m *Mailer) claim(ctx context.Context, n int) ([]pendingEmail, error) {
	rows, err := m.Pool.Query(ctx, `WITH due AS (
			SELECT id FROM notifications WHERE status = 'pending' AND next_attempt_at <= now()
			ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED)
		UPDATE notifications n SET attempts = n.attempts + 1, next_attempt_at = now() + $1::interval
		FROM due WHERE n.id = due.id
		RETURNING n.id, n.kind, n.to_name, n.to_address, n.subject, n.body, n.attempts, n.correlation_id`, m.Timeout+emailLeaseMargin, n)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (pendingEmail, error) {
		var p pendingEmail
		err := r.Scan(&p.id, &p.kind, &p.toName, &p.toAddress, &p.subject, &p.body, &p.attempt, &p.correlationID)
		return p, err
	})
}

// call sends one email, or logs it when SMTP is not set.
func (m *Mailer) call(ctx context.Context, p pendingEmail) sentEmail {
	if m.SMTP == nil {
		m.Logger.Info("email (SMTP_URL is not set, so it is logged instead of sent)", "to", p.toAddress, "kind", p.kind,
			"subject", p.subject, "body", p.body, "message_id", p.id, "correlation_id", p.correlationID)
		return sentEmail{p: p}
	}
	return sentEmail{p: p, err: m.send(ctx, p)}
}

// record stores what became of the sends, in one transaction: sent (or logged), retried
// after RetryBase doubling, or failed after Attempts.
func (m *Mailer) record(ctx context.Context, done []sentEmail) error {
	tx, err := m.Pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	for _, s := range done {
		p := s.p
		status := map[bool]string{true: "logged", false: "sent"}[m.SMTP == nil]
		if s.err != nil {
			status = "failed"
		}
		m.Metrics.WorkerOutcome("email", status)
		m.Logger.Debug("email handled", "message_id", p.id, "kind", p.kind, "status", status, "correlation_id", p.correlationID)
		switch {
		case s.err == nil:
			_, err = tx.Exec(ctx, `UPDATE notifications SET status = $2, sent_at = now(), last_error = NULL WHERE id = $1`, p.id, status)
		case p.attempt >= m.Attempts:
			m.Logger.Warn("email not sent, given up", "to", p.toAddress, "kind", p.kind, "attempt", p.attempt, "error", s.err,
				"correlation_id", p.correlationID)
			_, err = tx.Exec(ctx, `UPDATE notifications SET status = 'failed', last_error = $2 WHERE id = $1`,
				p.id, truncate(s.err.Error(), maxErrorText))
		default:
			m.Logger.Warn("email not sent", "to", p.toAddress, "kind", p.kind, "attempt", p.attempt, "error", s.err,
				"correlation_id", p.correlationID)
			_, err = tx.Exec(ctx, `UPDATE notifications SET last_error = $2, next_attempt_at = now() + $3::interval WHERE id = $1`,
				p.id, truncate(s.err.Error(), maxErrorText), m.RetryBase<<min(p.attempt-1, 20))
		}
		if err != nil {
			return err
		}
	}
	return tx.Commit(ctx)
}

// Message renders an email as RFC 5322 text: quoted-printable UTF-8, encoded headers, and
// the event id as Message-ID.
func (m *Mailer) Message(p pendingEmail, at time.Time) ([]byte, error) {
	from, err := mail.ParseAddress(m.From)
	if err != nil {
		return nil, fmt.Errorf("SMTP_FROM: %w", err)
	}
	to := mail.Address{Name: p.toName, Address: p.toAddress}
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%s@chatbotd>\r\n",
		from.String(), to.String(), mime.QEncoding.Encode("utf-8", p.subject), at.Format(time.RFC1123Z), p.id)
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n")
	fmt.Fprintf(&b, "X-Chatbotd-Notification: %s\r\n\r\n", p.kind)
	w := quotedprintable.NewWriter(&b)
	if _, err := w.Write([]byte(p.body)); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func (m *Mailer) send(ctx context.Context, p pendingEmail) error {
	msg, err := m.Message(p, time.Now())
	if err != nil {
		return err
	}
	from, _ := mail.ParseAddress(m.From) // checked by Message
	d := net.Dialer{Timeout: m.Timeout}
	conn, err := d.DialContext(ctx, "tcp", m.SMTP.Addr)
	if err != nil {
		return err
	}
	_ = conn.SetDeadline(time.Now().Add(m.Timeout))
	// Shutting down does not wait for a slow server: the email is not recorded, and the
	// next process sends it once its lease runs out.
	defer context.AfterFunc(ctx, func() { _ = conn.Close() })()
	tlsConfig := &tls.Config{ServerName: m.SMTP.Host, MinVersion: tls.VersionTLS12}
	var c *smtp.Client
	switch {
	case m.SMTP.Implicit:
		c = smtp.NewClient(tls.Client(conn, tlsConfig))
	case m.SMTP.NoTLS:
		c = smtp.NewClient(conn)
	default:
		if c, err = smtp.NewClientStartTLS(conn, tlsConfig); err != nil {
			_ = conn.Close()
			return err
		}
	}
	defer c.Close()
	if m.SMTP.Username != "" {
		if err := c.Auth(sasl.NewPlainClient("", m.SMTP.Username, m.SMTP.Password)); err != nil {
			return err
		}
	}
	if err := c.SendMail(from.Address, []string{p.toAddress}, bytes.NewReader(msg)); err != nil {
		return err
	}
	return c.Quit()
}
