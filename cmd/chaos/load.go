package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/chatbotsaas/chatbotd/internal/measure"
)

// client talks to chatbotd as one organization's owner.
type client struct {
	http  *http.Client
	bases []string // the chatbotd processes, used in turn
	next  atomic.Int64
	token string
	org   string
}

type envelope struct {
	Data  json.RawMessage `json:"data"`
	Meta  json.RawMessage `json:"meta"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// do sends a request to the next process and decodes the envelope.
func (c *client) do(ctx context.Context, method, path string, body any) (int, envelope, error) {
	a, err := c.raw(ctx, method, path, body, nil)
	if err != nil && a.status != 0 {
		err = fmt.Errorf("%s %s: %d, not an envelope: %w", method, path, a.status, err)
	}
	return a.status, a.env, err
}

// answer is a whole answer: status, headers and envelope.
type answer struct {
	status int
	header http.Header
	env    envelope
}

// raw sends one request with extra headers to the next process.
func (c *client) raw(ctx context.Context, method, path string, body any, headers map[string]string) (answer, error) {
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	base := c.bases[int(c.next.Add(1))%len(c.bases)]
	req, err := http.NewRequestWithContext(ctx, method, base+path, r)
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	res, err := c.http.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer res.Body.Close()
	a := answer{status: res.StatusCode, header: res.Header}
	if err := json.NewDecoder(res.Body).Decode(&a.env); err != nil && !errors.Is(err, io.EOF) {
		return a, err
	}
	return a, nil
}

// must sends a request until it gets want (the setup runs before any fault, but a
// process may still be settling).
func (c *client) must(ctx context.Context, want int, method, path string, body any) (envelope, error) {
	var last string
	for i := 0; i < 50; i++ {
		st, env, err := c.do(ctx, method, path, body)
		if err == nil && st == want {
			return env, nil
		}
		last = fmt.Sprintf("%d %v", st, err)
		if env.Error != nil {
			last += " " + env.Error.Code + ": " + env.Error.Message
		}
		if ctx.Err() != nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	return envelope{}, fmt.Errorf("%s %s: want %d, got %s", method, path, want, last)
}

func id(env envelope) string {
	var d struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(env.Data, &d)
	return d.ID
}

// fixture is what the load works on: a knowledge-base chatbot that answers and a webhook
// chatbot whose workflow answers, their conversations, and users and chatbots to change.
type fixture struct {
	bot      string
	convs    []string
	users    []string
	chatbots []string
}

// setup registers an organization and makes the fixture; workflow is the URL the webhook
// chatbot calls.
func setup(ctx context.Context, c *client, workflow string) (*fixture, error) {
	email := "owner-" + uuid.NewString()[:8] + "@chaos.example"
	env, err := c.must(ctx, 201, "POST", "/api/v1/auth/register", map[string]string{"organization_name": "Chaos", "name": "Owner",
		"email": email, "password": "chaos-password"})
	if err != nil {
		return nil, err
	}
	var reg struct {
		Organization struct{ ID string } `json:"organization"`
	}
	_ = json.Unmarshal(env.Data, &reg)
	c.org = reg.Organization.ID
	if env, err = c.must(ctx, 200, "POST", "/api/v1/auth/login", map[string]string{"email": email, "password": "chaos-password"}); err != nil {
		return nil, err
	}
	var login struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.Unmarshal(env.Data, &login)
	c.token = login.AccessToken

	f := &fixture{}
	if env, err = c.must(ctx, 201, "POST", "/api/v1/chatbots", map[string]string{"name": "Support"}); err != nil {
		return nil, err
	}
	f.bot = id(env)
	entries := make([]map[string]string, 50)
	for i := range entries {
		entries[i] = map[string]string{"question": fmt.Sprintf("How do I configure feature %d?", i),
			"answer": fmt.Sprintf("Open settings and turn feature %d on.", i)}
	}
	if _, err := c.must(ctx, 201, "POST", "/api/v1/chatbots/"+f.bot+"/knowledge/import", entries); err != nil {
		return nil, err
	}
	if _, err := c.must(ctx, 202, "POST", "/api/v1/chatbots/"+f.bot+"/train", nil); err != nil {
		return nil, err
	}
	if err := waitFor(ctx, time.Minute, func() (bool, error) {
		_, env, err := c.do(ctx, "GET", "/api/v1/chatbots/"+f.bot, nil)
		var d struct {
			Training struct{ Status string } `json:"training"`
		}
		_ = json.Unmarshal(env.Data, &d)
		return err == nil && d.Training.Status == "completed", nil
	}); err != nil {
		return nil, fmt.Errorf("training: %w", err)
	}
	if _, err := c.must(ctx, 200, "POST", "/api/v1/chatbots/"+f.bot+"/publish", nil); err != nil {
		return nil, err
	}
	for range 4 {
		env, err := c.must(ctx, 201, "POST", "/api/v1/chatbots/"+f.bot+"/conversations", map[string]any{})
		if err != nil {
			return nil, err
		}
		f.convs = append(f.convs, id(env))
	}
	// A fifth of the messages go to a webhook chatbot: answered by the webhook responder,
	// a consumer of its own on watermill's router.
	env, err = c.must(ctx, 201, "POST", "/api/v1/chatbots", map[string]any{"name": "Workflow",
		"responder": map[string]any{"type": "webhook", "url": workflow, "secret": "chaos-workflow-secret-0123456789"}})
	if err != nil {
		return nil, err
	}
	hooked := id(env)
	if _, err := c.must(ctx, 200, "POST", "/api/v1/chatbots/"+hooked+"/publish", nil); err != nil {
		return nil, err
	}
	env, err = c.must(ctx, 201, "POST", "/api/v1/chatbots/"+hooked+"/conversations", map[string]any{})
	if err != nil {
		return nil, err
	}
	f.convs = append(f.convs, id(env))
	for i := range 4 {
		env, err := c.must(ctx, 201, "POST", "/api/v1/users", newUser(i))
		if err != nil {
			return nil, err
		}
		f.users = append(f.users, id(env))
		if env, err = c.must(ctx, 201, "POST", "/api/v1/chatbots", map[string]string{"name": fmt.Sprint("Bot ", i)}); err != nil {
			return nil, err
		}
		f.chatbots = append(f.chatbots, id(env))
	}
	return f, nil
}

func newUser(i int) map[string]string {
	return map[string]string{"name": fmt.Sprint("User ", i), "email": fmt.Sprintf("u%d-%s@chaos.example", i, uuid.NewString()[:8]),
		"password": "password1", "password_confirmation": "password1"}
}

func waitFor(ctx context.Context, d time.Duration, done func() (bool, error)) error {
	return measure.Poll(ctx, d, 100*time.Millisecond, done)
}

// entry is one acknowledged command: its stream, the version and position the 2xx named.
type entry struct {
	op       string
	stream   uuid.UUID
	version  int
	position int64
}

// load runs commands and reads from several clients and keeps the ledger.
type load struct {
	c   *client
	f   *fixture
	mu  sync.Mutex
	led []entry
	// statuses counts answers by status code; 0 counts requests that got no answer
	// (connection refused while a process is down).
	statuses map[int]int
	samples  map[int][]string // a few answers per 5xx status
	posted   int
	chatbots []string
	cancel   context.CancelFunc
	done     sync.WaitGroup
	// pace is the pause between a client's requests (0: back to back).
	pace time.Duration
}

func startLoad(ctx context.Context, c *client, f *fixture, workers int, pace time.Duration) *load {
	ctx, cancel := context.WithCancel(ctx)
	l := &load{c: c, f: f, statuses: map[int]int{}, samples: map[int][]string{}, cancel: cancel,
		chatbots: append([]string(nil), f.chatbots...), pace: pace}
	for w := range workers {
		l.done.Add(1)
		go func() {
			defer l.done.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for i := 0; ctx.Err() == nil; i++ {
				l.one(ctx, rng, w, i)
				if l.pace > 0 {
					select {
					case <-ctx.Done():
					case <-time.After(l.pace):
					}
				}
			}
		}()
	}
	return l
}

// stop ends the load and waits for the requests in flight.
func (l *load) stop() {
	l.cancel()
	l.done.Wait()
}

func (l *load) pick(rng *rand.Rand, from []string) string { return from[rng.IntN(len(from))] }

// one sends one request of the mix.
func (l *load) one(ctx context.Context, rng *rand.Rand, w, i int) {
	var method, path, op string
	var body any
	want := 200
	l.mu.Lock()
	bots := l.chatbots
	l.mu.Unlock()
	switch n := rng.IntN(100); {
	case n < 35:
		op, method, path, want = "message", "POST", "/api/v1/conversations/"+l.pick(rng, l.f.convs)+"/messages", 202
		body = map[string]string{"content": fmt.Sprintf("How do I configure feature %d?", rng.IntN(60))}
	case n < 50:
		op, method, path, want = "create chatbot", "POST", "/api/v1/chatbots", 201
		body = map[string]string{"name": fmt.Sprintf("Bot %d-%d", w, i)}
	case n < 65:
		op, method, path = "rename chatbot", "PATCH", "/api/v1/chatbots/"+l.pick(rng, bots)
		body = map[string]string{"name": fmt.Sprintf("Renamed %d-%d", w, i)}
	case n < 68:
		op, method, path, want = "create user", "POST", "/api/v1/users", 201
		body = newUser(w*100000 + i)
	case n < 80:
		op, method, path = "rename user", "PATCH", "/api/v1/users/"+l.pick(rng, l.f.users)
		body = map[string]string{"name": fmt.Sprintf("Renamed %d-%d", w, i)}
	case n < 92:
		op, method, path = "read user", "GET", "/api/v1/users/"+l.pick(rng, l.f.users)
	default:
		op, method, path = "read chatbot", "GET", "/api/v1/chatbots/"+l.pick(rng, bots)
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	st, env, err := l.c.do(rctx, method, path, body)
	if err != nil && st == 0 {
		l.count(0, "")
		sleep(ctx, 50*time.Millisecond) // the process is down: no point in spinning
		return
	}
	detail := ""
	if env.Error != nil {
		detail = op + ": " + env.Error.Code + " " + env.Error.Message
	} else if err != nil {
		detail = op + ": " + err.Error()
	}
	l.count(st, detail)
	if st != want || method == "GET" {
		return
	}
	var meta struct {
		StreamID      uuid.UUID `json:"stream_id"`
		StreamVersion int       `json:"stream_version"`
		Position      int64     `json:"position"`
	}
	if err := json.Unmarshal(env.Meta, &meta); err != nil || meta.StreamID == uuid.Nil {
		l.count(-1, op+": a 2xx without a consistency token: "+string(env.Meta))
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.led = append(l.led, entry{op: op, stream: meta.StreamID, version: meta.StreamVersion, position: meta.Position})
	switch op {
	case "message":
		l.posted++
	case "create chatbot":
		l.chatbots = append(l.chatbots, id(env))
	}
}

func (l *load) count(status int, detail string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.statuses[status]++
	if (status >= 500 || status < 0) && len(l.samples[status]) < 3 && detail != "" {
		l.samples[status] = append(l.samples[status], detail)
	}
}

// snapshot returns the status counts so far.
func (l *load) snapshot() map[int]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[int]int, len(l.statuses))
	for k, v := range l.statuses {
		out[k] = v
	}
	return out
}

func (l *load) ledger() []entry {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]entry(nil), l.led...)
}

// statusLine renders status counts, e.g. "200×812 202×400 503×31 no answer×12".
func statusLine(m map[int]int) string {
	var parts []string
	for _, st := range []int{-1, 0, 200, 201, 202, 400, 401, 404, 409, 422, 429, 500, 502, 503, 504} {
		if n := m[st]; n > 0 {
			parts = append(parts, statusName(st)+"×"+fmt.Sprint(n))
		}
	}
	for st, n := range m {
		if !strings.Contains(" -1 0 200 201 202 400 401 404 409 422 429 500 502 503 504 ", fmt.Sprintf(" %d ", st)) {
			parts = append(parts, statusName(st)+"×"+fmt.Sprint(n))
		}
	}
	return strings.Join(parts, " ")
}

func statusName(st int) string {
	switch st {
	case 0:
		return "no answer"
	case -1:
		return "no token"
	}
	return fmt.Sprint(st)
}

func diff(after, before map[int]int) map[int]int {
	out := map[int]int{}
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			out[k] = d
		}
	}
	return out
}
