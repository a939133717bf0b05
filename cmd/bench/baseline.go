package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/chatbotsaas/chatbotd/internal/auth"
)

// bare is the baseline service: what a plain CRUD service built with Gin does for the
// same requests, in this process (so it shares the cores with the load generator, as
// chatbotd does). It authenticates nothing, keeps no log and no projection.
type bare struct {
	base  string
	stop  func()
	floor *floor // behind POST /crud/chatbots-projected
}

func startBare(ctx context.Context, pool *pgxpool.Pool, rdb *redis.Client) (*bare, error) {
	if _, err := pool.Exec(ctx, `DROP TABLE IF EXISTS crud_chatbots, crud_users;
		CREATE TABLE crud_chatbots (LIKE chatbots INCLUDING ALL);
		CREATE TABLE crud_users (LIKE users INCLUDING ALL, password_hash text NOT NULL);
		CREATE UNIQUE INDEX ON crud_users (organization_id, lower(email))`); err != nil {
		return nil, err
	}
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(gin.Recovery())
	hasher := auth.NewHasher(0) // PASSWORD_HASH_CONCURRENCY's default: one per core
	org := uuid.New()
	fl, err := startFloor(ctx, pool, org)
	if err != nil {
		return nil, err
	}
	// POST /crud/chatbots: validate, insert the row, answer it. POST
	// /crud/chatbots-projected: the same, and the row queued for the floor's projection.
	createChatbot := func(projected bool) gin.HandlerFunc {
		return func(c *gin.Context) {
			in, ok := bindChatbot(c)
			if !ok {
				return
			}
			id, now := uuid.Must(uuid.NewV7()), time.Now().UTC()
			if _, err := pool.Exec(c, `INSERT INTO crud_chatbots (id, organization_id, name, description, welcome_message,
				fallback_message, status, responder, version, created_at, updated_at)
				VALUES ($1, $2, $3, $4, '', 'Sorry, I do not know.', 'draft', '{"type":"knowledge_base"}', 1, $5, $5)`,
				id, org, in.Name, in.Description, now); err != nil {
				c.JSON(500, gin.H{"error": gin.H{"code": "INTERNAL"}})
				return
			}
			if projected {
				fl.add(floorRow{id: id, name: in.Name, description: in.Description, at: now})
			}
			c.JSON(201, gin.H{"data": gin.H{"id": id, "name": in.Name, "description": in.Description, "status": "draft",
				"version": 1, "created_at": now, "updated_at": now}})
		}
	}
	r.POST("/crud/chatbots", createChatbot(false))
	r.POST("/crud/chatbots-projected", createChatbot(true))
	// POST /crud/users: validate, hash the password as chatbotd does, insert the row.
	r.POST("/crud/users", func(c *gin.Context) {
		var in struct {
			Name     string `json:"name"`
			Email    string `json:"email"`
			Password string `json:"password"`
		}
		if err := c.ShouldBindJSON(&in); err != nil || in.Name == "" || !strings.Contains(in.Email, "@") || len(in.Password) < 8 {
			c.JSON(422, gin.H{"error": gin.H{"code": "VALIDATION_FAILED"}})
			return
		}
		hash, err := hasher.Hash(c, in.Password)
		if err != nil {
			c.JSON(500, gin.H{"error": gin.H{"code": "INTERNAL"}})
			return
		}
		id, now := uuid.Must(uuid.NewV7()), time.Now().UTC()
		if _, err := pool.Exec(c, `INSERT INTO crud_users (id, organization_id, name, email, status, roles, version,
			created_at, updated_at, password_hash) VALUES ($1, $2, $3, $4, 'active', '{member}', 1, $5, $5, $6)`,
			id, org, in.Name, in.Email, now, hash); err != nil {
			c.JSON(500, gin.H{"error": gin.H{"code": "INTERNAL"}})
			return
		}
		c.JSON(201, gin.H{"data": gin.H{"id": id, "name": in.Name, "email": in.Email, "status": "active",
			"roles": []string{"member"}, "version": 1, "created_at": now, "updated_at": now}})
	})
	// GET /crud/cache?key=: the same Redis read as chatbotd's cache (HMGET of the entry's
	// version and document), the document answered as it is.
	r.GET("/crud/cache", func(c *gin.Context) {
		vals, err := rdb.HMGet(c, c.Query("key"), "v", "d").Result()
		doc, ok := "", false
		if err == nil {
			doc, ok = vals[1].(string)
		}
		if !ok {
			c.JSON(404, gin.H{"error": gin.H{"code": "NOT_FOUND"}})
			return
		}
		c.Data(200, "application/json; charset=utf-8", []byte(doc))
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return &bare{base: "http://" + ln.Addr().String(), stop: func() { _ = srv.Close() }, floor: fl}, nil
}

// chatbotInput is the body of the baselines' POST of a chatbot.
type chatbotInput struct {
	Name        string `json:"name"`
	Description string `json:"description"`
}

// bindChatbot binds and validates a baseline's chatbot body, answering 422 when it fails.
func bindChatbot(c *gin.Context) (chatbotInput, bool) {
	var in chatbotInput
	if err := c.ShouldBindJSON(&in); err != nil || strings.TrimSpace(in.Name) == "" || len(in.Name) > 100 {
		c.JSON(422, gin.H{"error": gin.H{"code": "VALIDATION_FAILED"}})
		return in, false
	}
	return in, true
}

// request builds one request of a load.
type request func(i int) (*http.Request, error)

func jsonRequest(method, url, token string, body func(i int) any) request {
	return func(i int) (*http.Request, error) {
		var r io.Reader
		if body != nil {
			b, err := json.Marshal(body(i))
			if err != nil {
				return nil, err
			}
			r = bytes.NewReader(b)
		}
		req, err := http.NewRequest(method, url, r)
		if err != nil {
			return nil, err
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		return req, nil
	}
}

// closedLoop sends requests from clients goroutines, each waiting for its answer, for d,
// and returns the rate of answers with status want and their latencies.
func closedLoop(client *http.Client, next request, want, clients int, d time.Duration) (loadResult, error) {
	deadline := time.Now().Add(d)
	var mu sync.Mutex
	var lat []time.Duration
	var seq atomic.Int64
	var failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for time.Now().Before(deadline) {
				t0 := time.Now()
				st, err := send(client, next, int(seq.Add(1)))
				if err != nil || st != want {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("status %d, %v", st, err))
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		return loadResult{}, fmt.Errorf("%d requests failed (first: %v)", n, firstErr.Load())
	}
	return summarize(lat, time.Since(start)), nil
}

func send(client *http.Client, next request, i int) (int, error) {
	req, err := next(i)
	if err != nil {
		return 0, err
	}
	res, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	if res.StatusCode >= 400 {
		// A failure's answer says why (its error code and message): keep its start.
		b, _ := io.ReadAll(io.LimitReader(res.Body, 300))
		_, _ = io.Copy(io.Discard, res.Body)
		return res.StatusCode, fmt.Errorf("answer %s", b)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode, nil
}

func summarize(lat []time.Duration, elapsed time.Duration) loadResult {
	if len(lat) == 0 {
		return loadResult{}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return loadResult{rate: float64(len(lat)) / elapsed.Seconds(), p50: lat[len(lat)/2], p99: lat[len(lat)*99/100]}
}

// openLoop sends rate requests per second for d, each at its scheduled time whether or
// not earlier ones were answered, and times each from its schedule (so a stall counts
// for every request it delays). after, when set, runs after each answer with status
// want, and its duration is returned as a second latency series.
func openLoop(client *http.Client, next request, want int, rate float64, d time.Duration,
	after func(i int, res *http.Response, body []byte) (time.Duration, bool, error),
) (loadResult, loadResult, error) {
	total := int(rate * d.Seconds())
	interval := time.Duration(float64(time.Second) / rate)
	var mu sync.Mutex
	var lat, lat2 []time.Duration
	var sec, sec2 []int // the second each latency's request was due in
	var failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for i := range total {
		at := start.Add(time.Duration(i) * interval)
		time.Sleep(time.Until(at))
		wg.Add(1)
		go func() {
			defer wg.Done()
			fail := func(s string) {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, s)
			}
			req, err := next(i)
			if err != nil {
				fail(err.Error())
				return
			}
			res, err := client.Do(req)
			if err != nil {
				fail(err.Error())
				return
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != want {
				fail(fmt.Sprintf("status %d: %s", res.StatusCode, body))
				return
			}
			took := time.Since(at)
			var extra time.Duration
			var sampled bool
			if after != nil {
				if extra, sampled, err = after(i, res, body); err != nil {
					fail(err.Error())
					return
				}
			}
			second := int(time.Duration(i) * interval / time.Second)
			mu.Lock()
			lat, sec = append(lat, took), append(sec, second)
			if sampled {
				lat2, sec2 = append(lat2, extra), append(sec2, second)
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		return loadResult{}, loadResult{}, fmt.Errorf("%d of %d requests failed (first: %v)", n, total, firstErr.Load())
	}
	elapsed := time.Since(start)
	return worstSecond(summarize(slices.Clone(lat), elapsed), lat, sec), worstSecond(summarize(slices.Clone(lat2), elapsed), lat2, sec2), nil
}

// worstSecond sets r's worst one-second p99 from the latencies and the second each
// one's request was due in.
func worstSecond(r loadResult, lat []time.Duration, sec []int) loadResult {
	by := map[int][]time.Duration{}
	for i, l := range lat {
		by[sec[i]] = append(by[sec[i]], l)
	}
	for s, ls := range by {
		if p99 := summarize(ls, time.Second).p99; p99 > r.worst {
			r.worst, r.worstAt = p99, s
		}
	}
	return r
}

var redisBenchLine = regexp.MustCompile(`(?m)^"?GET"?,"?([0-9.]+)"?`)

// redisBenchmark runs redis-benchmark's GET from clients connections (no pipelining)
// and returns its requests per second.
func redisBenchmark(ctx context.Context, addr string, clients int, requests int) (float64, error) {
	host, port, _ := net.SplitHostPort(addr)
	return toolRate(ctx, redisBenchLine, "redis-benchmark", "-h", host, "-p", port, "-c", strconv.Itoa(clients),
		"-n", strconv.Itoa(requests), "-t", "get", "-d", "300", "--csv", "-q")
}

// residentMB reads a process's resident set and its peak, in MiB.
func residentMB(pid int) (rss, peak float64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		var kb float64
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			fmt.Sscanf(strings.TrimSpace(v), "%f", &kb)
			rss = kb / 1024
		}
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			fmt.Sscanf(strings.TrimSpace(v), "%f", &kb)
			peak = kb / 1024
		}
	}
	if rss == 0 {
		return 0, 0, errors.New("no VmRSS")
	}
	return rss, peak, nil
}

// cpuShares runs fn and returns how the CPU time spent meanwhile was shared between
// process names (postgres, beam.smp, redis-server, chatbotd-bench, bench, ...), as
// fractions of the machine's cores over the run.
//
// A process that started and ended meanwhile (pgbench and its server's backend) is not
// read from /proc: what the machine's cores were busy with beyond the processes read is
// counted under endedName.
func cpuShares(fn func() error) (map[string]float64, error) {
	before, busyBefore := cpuByName(), busyTicks()
	start := time.Now()
	if err := fn(); err != nil {
		return nil, err
	}
	elapsed := time.Since(start).Seconds()
	after, busyAfter := cpuByName(), busyTicks()
	shares := map[string]float64{}
	var seen float64
	for name, ticks := range after {
		if d := ticks - before[name]; d > 0 {
			shares[name] = d / 100 / elapsed // USER_HZ is 100 on Linux
			seen += d
		}
	}
	if ended := busyAfter - busyBefore - seen; ended > 0 {
		shares[endedName] = ended / 100 / elapsed
	}
	return shares, nil
}

// endedName names, in cpuShares, the cores' time that no process still running accounts
// for: processes that ended meanwhile, and interrupts.
const endedName = "ended processes and interrupts"

// busyTicks is the time the machine's cores were busy since boot, in USER_HZ ticks (the
// first line of /proc/stat, without idle and iowait).
func busyTicks() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	fields := strings.Fields(line)
	var busy float64
	for i, f := range fields[1:] {
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest time is counted in user already
			continue
		}
		v, _ := strconv.ParseFloat(f, 64)
		busy += v
	}
	return busy
}

func cpuByName() map[string]float64 {
	out := map[string]float64{}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < open {
			continue
		}
		name := s[open+1 : close]
		fields := strings.Fields(s[close+2:])
		if len(fields) < 13 {
			continue
		}
		utime, _ := strconv.ParseFloat(fields[11], 64)
		stime, _ := strconv.ParseFloat(fields[12], 64)
		if strings.HasPrefix(name, "beam") { // RabbitMQ's Erlang VM
			name = "rabbitmq"
		}
		out[name] += utime + stime
	}
	return out
}

// formatShares writes the shares above 3% of a core, largest first.
func formatShares(shares map[string]float64) string {
	type kv struct {
		k string
		v float64
	}
	var all []kv
	for k, v := range shares {
		if v >= 0.03 {
			all = append(all, kv{k, v})
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].v > all[j].v })
	var parts []string
	for _, e := range all {
		parts = append(parts, fmt.Sprintf("%s %.2f", e.k, e.v))
	}
	return strings.Join(parts, ", ")
}

// perItem writes the shares as microseconds of CPU an item at rate items a second, for
// the processes above 3% of a core, largest first; the kernel's workers (whose names say
// what each was doing at the moment it was read) summed as one.
func perItem(shares map[string]float64, rate float64) string {
	summed := map[string]float64{}
	for k, v := range shares {
		if strings.HasPrefix(k, "kworker/") {
			k = "kernel workers"
		}
		summed[k] += v
	}
	micro := map[string]float64{}
	var names []string
	for k, v := range summed {
		if v >= 0.03 {
			micro[k] = v / rate * 1e6
			names = append(names, k)
		}
	}
	sort.Slice(names, func(i, j int) bool { return micro[names[i]] > micro[names[j]] })
	parts := make([]string, len(names))
	for i, k := range names {
		parts[i] = fmt.Sprintf("%s %.0f µs", k, micro[k])
	}
	return strings.Join(parts, ", ")
}

// profileTop fetches a CPU profile of seconds from a pprof endpoint while load runs, and
// returns `go tool pprof -top`'s first lines.
func profileTop(ctx context.Context, pprofURL string, seconds int, out string, load func() error) (string, error) {
	type result struct {
		body []byte
		err  error
	}
	got := make(chan result, 1)
	go func() {
		res, err := http.Get(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", pprofURL, seconds))
		if err != nil {
			got <- result{err: err}
			return
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		got <- result{b, err}
	}()
	if err := load(); err != nil {
		return "", err
	}
	r := <-got
	if r.err != nil {
		return "", r.err
	}
	if err := os.WriteFile(out, r.body, 0o644); err != nil {
		return "", err
	}
	top, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=20", out).Output()
	if err != nil {
		return "", fmt.Errorf("go tool pprof: %w", err)
	}
	return string(top), nil
}
