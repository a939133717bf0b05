package reactors

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/db"
	"github.com/chatbotsaas/chatbotd/internal/metrics"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
	"github.com/chatbotsaas/chatbotd/internal/secretbox"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// receiver is the outside world of an outbox worker: it answers each call (keyed by the
// row's id) as behave says, and counts them. behave may block until ctx ends.
type receiver struct {
	mu     sync.Mutex
	calls  map[uuid.UUID]int
	behave func(ctx context.Context, id uuid.UUID) error
}

func (r *receiver) called(id uuid.UUID) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.calls[id] == 0 {
		return fmt.Errorf("%s not called", id)
	}
	return nil
}

func (r *receiver) count(id uuid.UUID) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[id]
}

func (r *receiver) answer(ctx context.Context, id uuid.UUID) error {
	r.mu.Lock()
	r.calls[id]++
	r.mu.Unlock()
	return r.behave(ctx, id)
}

// outboxWorker is one reactor on the outbox runtime, reduced to what the contract needs.
type outboxWorker struct {
	name string
	done string // the status of a row whose call succeeded
	// start points the worker at r (set up through setup) and runs it against pool with
	// attempts per row until the returned function is called (it waits).
	start func(t *testing.T, setup, pool *pgxpool.Pool, r *receiver, attempts int) (stop func())
	// add writes a due row and returns its id; status reads a row's status and its
	// attempts so far, counting one in flight ($1: its id).
	add    func(t *testing.T, pool *pgxpool.Pool) uuid.UUID
	status string
	// expire runs a row's lease out ($1: its id).
	expire string
}

var outboxWorkers = []outboxWorker{
	{name: "webhook deliverer", done: "delivered",
		// A pending delivery's claims are counted in its queue row, its recorded attempts
		// in the delivery.
		status: `SELECT status, coalesce((SELECT attempts FROM webhook_queue WHERE delivery_id = d.id), attempts)
			FROM webhook_deliveries d WHERE id = $1`,
		expire: `UPDATE webhook_queue SET leased_until = now() WHERE delivery_id = $1`,
		start: func(t *testing.T, setup, pool *pgxpool.Pool, r *receiver, attempts int) func() {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				_, _ = io.Copy(io.Discard, req.Body) // then the request's context ends when the caller hangs up
				id, _ := uuid.Parse(req.Header.Get("X-Event-ID"))
				if err := r.answer(req.Context(), id); err != nil {
					w.WriteHeader(http.StatusServiceUnavailable)
				}
			}))
			t.Cleanup(srv.Close)
			_, err := setup.Exec(context.Background(), `UPDATE webhooks SET url = $1 WHERE id = $2`, srv.URL, contractWebhook(t, setup))
			require.NoError(t, err)
			d := &WebhookDeliverer{Pool: pool, Store: eventstore.NewStore(pool), Box: contractBox(t), Client: srv.Client(),
				Timeout: 5 * time.Second, Workers: 4, Attempts: attempts, RetryBase: 20 * time.Millisecond,
				RetryMax: 40 * time.Millisecond, DisableAfter: 1000, Logger: testenv.Logger(t), Metrics: metrics.New()}
			return runUntilStopped(t, d.Run)
		},
		add: func(t *testing.T, pool *pgxpool.Pool) uuid.UUID {
			id := uuid.New()
			_, err := pool.Exec(context.Background(), `INSERT INTO webhook_deliveries (id, webhook_id, organization_id, event_id,
				event_type, stream_id, stream_version, position, payload, status, next_attempt_at)
				SELECT $1, id, organization_id, $1, 'contract.happened', $1, 1, 1, '{}', 'pending', now() FROM webhooks WHERE id = $2`,
				id, contractWebhook(t, pool))
			require.NoError(t, err)
			enqueuePending(t, pool)
			projectorCommitted(t, pool, readmodel.DeliveriesWork)
			return id
		}},
	{name: "mailer", done: "sent", status: `SELECT status, attempts FROM notifications WHERE id = $1`,
		expire: `UPDATE notifications SET next_attempt_at = now() WHERE id = $1`,
		start: func(t *testing.T, setup, pool *pgxpool.Pool, r *receiver, attempts int) func() {
			m := &Mailer{Pool: pool, SMTP: &SMTP{Addr: contractSMTP(t, r), Host: "127.0.0.1", NoTLS: true},
				From: "Chatbot SaaS <no-reply@chatbot.example>", Timeout: 5 * time.Second, Workers: 4, Attempts: attempts,
				RetryBase: 20 * time.Millisecond, Logger: testenv.Logger(t), Metrics: metrics.New()}
			return runUntilStopped(t, m.Run)
		},
		add: func(t *testing.T, pool *pgxpool.Pool) uuid.UUID {
			id := uuid.New()
			_, err := pool.Exec(context.Background(), `INSERT INTO notifications (id, organization_id, user_id, kind, to_name,
				to_address, subject, body, status, next_attempt_at)
				VALUES ($1, $2, $2, 'welcome', 'Ada', $3, 'Hello', 'Hello Ada', 'pending', now())`,
				id, uuid.New(), id.String()+"@contract.test")
			require.NoError(t, err)
			projectorCommitted(t, pool, readmodel.EmailsWork)
			return id
		}},
}

// projectorCommitted says, as a projector runtime does after its commit, that a batch
// wrote work (a work name, projections.NoteWork): a running worker claims them at once instead of at its next
// idle wake-up (up to 5 s later), which left a phase of the contract half of its time.
func projectorCommitted(t *testing.T, pool *pgxpool.Pool, work string) {
	t.Helper()
	_, err := pool.Exec(context.Background(), `SELECT pg_notify($1, $2)`, readmodel.AppliedChannel, work)
	require.NoError(t, err)
}

// enqueuePending gives each pending delivery a test wrote straight into
// webhook_deliveries its queue row, as the webhooks projector writes it (with the
// delivery's attempts so far).
func enqueuePending(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	_, err := pool.Exec(context.Background(), `INSERT INTO webhook_queue (delivery_id, webhook_id, stream_id, stream_version,
			position, next_attempt_at, attempts)
		SELECT id, webhook_id, stream_id, stream_version, position, next_attempt_at, attempts FROM webhook_deliveries d
		WHERE status = 'pending' AND NOT EXISTS (SELECT 1 FROM webhook_queue q WHERE q.delivery_id = d.id)`)
	require.NoError(t, err)
}

// pendingDeliveries writes n pending deliveries of hook, due now, each of a stream of
// its own, with attempts made so far, and their queue rows; it returns their ids.
func pendingDeliveries(t *testing.T, pool *pgxpool.Pool, hook uuid.UUID, n, attempts int) []uuid.UUID {
	t.Helper()
	ids := make([]uuid.UUID, n)
	for i := range ids {
		ids[i] = uuid.New()
		_, err := pool.Exec(context.Background(), `INSERT INTO webhook_deliveries (id, webhook_id, organization_id, event_id,
			event_type, stream_id, stream_version, position, payload, status, next_attempt_at, attempts)
			SELECT $1, id, organization_id, $1, 'contract.happened', $1, 1, $2, '{}', 'pending', now(), $4 FROM webhooks WHERE id = $3`,
			ids[i], i+1, hook, attempts)
		require.NoError(t, err)
	}
	enqueuePending(t, pool)
	return ids
}

// contractWebhook is the one subscription the contract's deliveries are for.
func contractWebhook(t *testing.T, pool *pgxpool.Pool) uuid.UUID {
	ctx := context.Background()
	var hook uuid.UUID
	if err := pool.QueryRow(ctx, `SELECT id FROM webhooks LIMIT 1`).Scan(&hook); err == nil {
		return hook
	}
	hook = uuid.New()
	_, err := pool.Exec(ctx, `INSERT INTO webhooks (id, organization_id, url, events, status, version, created_at, updated_at)
		VALUES ($1, $2, 'http://127.0.0.1:1/', '{*}', 'active', 1, now(), now())`, hook, uuid.New())
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO webhook_secrets (webhook_id, sealed) VALUES ($1, $2)`,
		hook, contractBox(t).Seal([]byte("whsec_contract"), hook[:]))
	require.NoError(t, err)
	return hook
}

func contractBox(t *testing.T) *secretbox.Box {
	b, err := secretbox.New([]byte("0123456789abcdef0123456789abcdef"))
	require.NoError(t, err)
	return b
}

// contractSMTP serves SMTP on loopback and answers each recipient (<row id>@...) as r says.
func contractSMTP(t *testing.T, r *receiver) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	srv := smtp.NewServer(smtpBackend{r: r, ctx: ctx})
	srv.Domain = "contract.test"
	srv.AllowInsecureAuth = true
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

type smtpBackend struct {
	r   *receiver
	ctx context.Context // ends with the test
}

func (b smtpBackend) NewSession(*smtp.Conn) (smtp.Session, error) {
	return &smtpSession{r: b.r, ctx: b.ctx}, nil
}

type smtpSession struct {
	r   *receiver
	ctx context.Context
	to  uuid.UUID
}

func (s *smtpSession) Reset()                               {}
func (s *smtpSession) Logout() error                        { return nil }
func (s *smtpSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to, _ = uuid.Parse(strings.Split(to, "@")[0])
	return nil
}
func (s *smtpSession) Data(r io.Reader) error {
	_, _ = io.Copy(io.Discard, r)
	return s.r.answer(s.ctx, s.to)
}

// runUntilStopped runs a worker until the returned function is called, or the test ends.
func runUntilStopped(t *testing.T, run func(context.Context) error) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = run(ctx); close(done) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

// The queue runtimes' contract (projections/contract_test.go), kept by the outbox
// runtime for each reactor on it: every row's call is made and its success recorded; a
// row whose calls keep failing is given up after its attempts (its dead letter) while
// the rest flows; a database that is down holds the work and gives nothing up; a call
// still running at shutdown is not recorded, and the next process makes it again once
// its lease has run out.
func TestOutboxWorkersKeepOneContract(t *testing.T) {
	for _, w := range outboxWorkers {
		t.Run(w.name, func(t *testing.T) {
			d := testenv.MustDatabase(t)
			ctx := context.Background()
			status := func(id uuid.UUID) (string, int) {
				var s string
				var n int
				require.NoError(t, d.Pool.QueryRow(ctx, w.status, id).Scan(&s, &n))
				return s, n
			}
			reached := func(id uuid.UUID, want string) func() error {
				return func() error {
					if s, _ := status(id); s != want {
						return fmt.Errorf("%s is %s, want %s", id, s, want)
					}
					return nil
				}
			}
			fine := func(context.Context, uuid.UUID) error { return nil }

			// Done, each once.
			r := &receiver{calls: map[uuid.UUID]int{}, behave: fine}
			stop := w.start(t, d.Pool, d.Pool, r, 3)
			ids := []uuid.UUID{w.add(t, d.Pool), w.add(t, d.Pool), w.add(t, d.Pool)}
			for _, id := range ids {
				testenv.Eventually(t, 10*time.Second, reached(id, w.done))
			}
			stop()
			for _, id := range ids {
				assert.Equal(t, 1, r.count(id))
			}

			// Poison: given up after its attempts; the rest flows.
			poison := w.add(t, d.Pool)
			r = &receiver{calls: map[uuid.UUID]int{}, behave: func(_ context.Context, id uuid.UUID) error {
				if id == poison {
					return errors.New("refused")
				}
				return nil
			}}
			stop = w.start(t, d.Pool, d.Pool, r, 3)
			after := w.add(t, d.Pool)
			testenv.Eventually(t, 10*time.Second, reached(after, w.done))
			testenv.Eventually(t, 10*time.Second, reached(poison, "failed"))
			stop()
			assert.Equal(t, 3, r.count(poison), "called once per attempt, then given up")

			// The database down: held, nothing given up.
			proxy := testenv.MustProxy(t, "127.0.0.1:5432")
			cfg, err := pgxpool.ParseConfig(d.URL)
			require.NoError(t, err)
			url := strings.Replace(d.URL, fmt.Sprintf("%s:%d", cfg.ConnConfig.Host, cfg.ConnConfig.Port), proxy.Addr(), 1)
			viaProxy, err := db.Open(ctx, url, 4)
			require.NoError(t, err)
			defer viaProxy.Close()
			r = &receiver{calls: map[uuid.UUID]int{}, behave: fine}
			proxy.Cut()
			held := w.add(t, d.Pool)
			stop = w.start(t, d.Pool, viaProxy, r, 1)
			time.Sleep(1500 * time.Millisecond) // claims fail meanwhile
			s, n := status(held)
			assert.Equal(t, "pending", s)
			assert.Zero(t, n, "nothing claimed while the database is away")
			proxy.Restore()
			testenv.Eventually(t, 20*time.Second, reached(held, w.done))
			stop()

			// Shut down with a call in flight: not recorded (one attempt allowed, so a
			// recorded failure would give the row up), made again after its lease.
			r = &receiver{calls: map[uuid.UUID]int{}, behave: func(ctx context.Context, _ uuid.UUID) error {
				<-ctx.Done()
				return ctx.Err()
			}}
			// Added first, so that the worker's first claim takes it.
			unfinished := w.add(t, d.Pool)
			stop = w.start(t, d.Pool, d.Pool, r, 1)
			testenv.Eventually(t, 10*time.Second, func() error { return r.called(unfinished) })
			stop()
			s, n = status(unfinished)
			assert.Equal(t, "pending", s, "a call cut by shutdown is not recorded")
			assert.Equal(t, 1, n)
			_, err = d.Pool.Exec(ctx, w.expire, unfinished) // the lease runs out
			require.NoError(t, err)
			r = &receiver{calls: map[uuid.UUID]int{}, behave: fine}
			stop = w.start(t, d.Pool, d.Pool, r, 2)
			testenv.Eventually(t, 10*time.Second, reached(unfinished, w.done))
			stop()
		})
	}
}
