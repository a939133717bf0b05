package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/broker"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
)

// settle waits until the relay has published every event and every queue of the
// scenario is empty (twice in a row, 300 ms apart: a reply appends events of its own).
func settle(ctx context.Context, pool *pgxpool.Pool, n names, bound time.Duration) (time.Duration, error) {
	start := time.Now()
	quiet := 0
	err := waitFor(ctx, bound, func() (bool, error) {
		relay, err := eventstore.RelayLag(ctx, pool, "")
		if err != nil {
			quiet = 0
			return false, nil // the database may be coming back
		}
		behind := relay.Behind > 0
		busy, err := busyQueues(ctx, n)
		if err != nil || behind || len(busy) > 0 {
			quiet = 0
			return false, nil
		}
		quiet++
		if quiet < 3 {
			time.Sleep(200 * time.Millisecond)
		}
		return quiet >= 3, nil
	})
	return time.Since(start), err
}

// swept waits until the sweep (projections.Sweep, every 5 s here) has checked every
// consumer on the projector runtime against the log up to the relay's checkpoint now, and
// returns how many events it has published again in all, by consumer: events the broker
// lost, or that a consumer held while it applied nothing for the sweep's grace.
func swept(ctx context.Context, pool *pgxpool.Pool, bound time.Duration) (time.Duration, map[string]int64, error) {
	start := time.Now()
	cp, err := eventstore.RelayCheckpoint(ctx, pool, "")
	if err != nil {
		return 0, nil, err
	}
	redriven := map[string]int64{}
	err = waitFor(ctx, bound, func() (bool, error) {
		rows, err := pool.Query(ctx, `SELECT name, redriven, (transaction_id, position) >= ($1::text::xid8, $2::bigint)
			FROM projection_sweeps`, strconv.FormatUint(cp.TransactionID, 10), cp.Position)
		if err != nil {
			return false, nil // the database may be coming back
		}
		defer rows.Close()
		all, n := true, 0
		for rows.Next() {
			var name string
			var count int64
			var done bool
			if err := rows.Scan(&name, &count, &done); err != nil {
				return false, err
			}
			redriven[name], all, n = count, all && done, n+1
		}
		return all && n > 0, rows.Err()
	})
	return time.Since(start), redriven, err
}

// published reports whether the relay has published the event at p and everything
// before it in commit order (transaction id, then position: not position alone).
func published(ctx context.Context, pool *pgxpool.Pool, p commitPoint) (bool, error) {
	var done bool
	err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM relay_checkpoints c WHERE c.name = 'default'
		AND (c.transaction_id, c.position) >= ($1::text::xid8, $2::bigint))`, p.xid, p.position).Scan(&done)
	return done, err
}

// commitPoint is a place in the relay's order.
type commitPoint struct {
	xid      string
	position int64
}

// head is the last committed event in the relay's order.
func head(ctx context.Context, pool *pgxpool.Pool) (commitPoint, error) {
	var p commitPoint
	err := pool.QueryRow(ctx, `SELECT transaction_id::text, position FROM events ORDER BY transaction_id DESC, position DESC LIMIT 1`).Scan(&p.xid, &p.position)
	return p, err
}

// busyQueues lists the scenario's work queues that hold messages (ready or unacked).
func busyQueues(ctx context.Context, n names) ([]string, error) {
	out, err := listQueues(ctx, n, "name", "messages")
	if err != nil {
		return nil, err
	}
	var busy []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		// The claim of the names (broker.ClaimQueues) always holds its one message.
		if len(f) == 2 && strings.HasPrefix(f[0], n.queuePrefix) && !strings.HasSuffix(f[0], ".dead") &&
			!strings.HasSuffix(f[0], ".unrouted") && f[0] != n.queuePrefix+broker.ClaimSuffix && f[1] != "0" {
			busy = append(busy, f[0]+"="+f[1])
		}
	}
	return busy, nil
}

// deadLetters counts the messages in each dead-letter queue of the scenario.
func deadLetters(ctx context.Context, n names) (map[string]int, error) {
	out, err := listQueues(ctx, n, "name", "messages")
	if err != nil {
		return nil, err
	}
	dead := map[string]int{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && strings.HasPrefix(f[0], n.queuePrefix) && strings.HasSuffix(f[0], ".dead") && f[1] != "0" {
			var v int
			fmt.Sscan(f[1], &v)
			dead[strings.TrimSuffix(strings.TrimPrefix(f[0], n.queuePrefix), ".dead")] = v
		}
	}
	return dead, nil
}

// checker checks the invariants of a scenario once the system has settled.
type checker struct {
	sc     string
	sys    *system
	pool   *pgxpool.Pool
	dbURL  string
	n      names
	l      *load
	out    []result
	expect struct {
		deadLetters map[string]int // dead letters the scenario means to leave
	}
}

func (c *checker) add(invariant string, ok bool, format string, args ...any) {
	c.out = append(c.out, result{scenario: c.sc, invariant: invariant, ok: ok, detail: fmt.Sprintf(format, args...)})
}

// common checks every invariant that holds after any scenario.
func (c *checker) common(ctx context.Context) {
	c.ledger(ctx)
	c.noInternalErrors()
	c.projections(ctx)
	c.audit(ctx)
	c.replies(ctx)
	c.cache(ctx)
	c.dead(ctx)
}

// ledger: every acknowledged command's events are in the log, at the version and
// position its answer named.
func (c *checker) ledger(ctx context.Context) {
	led := c.l.ledger()
	streams, versions, positions := make([]uuid.UUID, len(led)), make([]int32, len(led)), make([]int64, len(led))
	for i, e := range led {
		streams[i], versions[i], positions[i] = e.stream, int32(e.version), e.position
	}
	var missing int
	err := c.pool.QueryRow(ctx, `SELECT count(*) FROM unnest($1::uuid[], $2::int[], $3::bigint[]) AS l(s, v, p)
		WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.stream_id = l.s AND e.stream_version = l.v AND e.position = l.p)`,
		streams, versions, positions).Scan(&missing)
	if err != nil {
		c.add("every 2xx is in the log", false, "%v", err)
		return
	}
	c.add("every 2xx is in the log", missing == 0 && len(led) > 0, "%d acknowledged commands, %d missing", len(led), missing)
}

func (c *checker) noInternalErrors() {
	st := c.l.snapshot()
	detail := statusLine(st)
	if s := c.l.samples[500]; len(s) > 0 {
		detail += "; e.g. " + strings.Join(s, " | ")
	}
	if s := c.l.samples[-1]; len(s) > 0 {
		detail += "; " + strings.Join(s, " | ")
	}
	c.add("no 500, every 2xx has its token", st[500] == 0 && st[-1] == 0, "%s", detail)
}

// projections: each rebuildable projection equals a replay of the whole log
// (chatbotd projections verify --all).
func (c *checker) projections(ctx context.Context) {
	cmd := exec.CommandContext(ctx, c.sys.o.binary, "projections", "verify", "--all", "--wait", "30s")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+c.dbURL, "LOG_LEVEL=error")
	out, err := cmd.Output()
	var differ []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "DIFFERS") || (strings.HasPrefix(line, "  ") && !strings.Contains(line, " 0 only live, 0 only in the replay")) {
			differ = append(differ, strings.TrimSpace(line))
		}
	}
	rows, verified := 0, strings.Count(string(out), ": equal to a replay of the log")
	for _, line := range strings.Split(string(out), "\n") {
		var table string
		var n int
		if _, err := fmt.Sscanf(strings.TrimSpace(line), "%s %d rows", &table, &n); err == nil {
			rows += n
		}
	}
	if err != nil {
		c.add("projections equal a replay of the log", false, "%v: %s", err, strings.Join(differ, "; "))
		return
	}
	c.add("projections equal a replay of the log", true, "%d projections, %d rows compared", verified, rows)
}

// audit: one audit entry per event, and the chains verify.
func (c *checker) audit(ctx context.Context) {
	var events, entries, missing int
	err := c.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM audit_entries),
		(SELECT count(*) FROM events e WHERE NOT EXISTS (SELECT 1 FROM audit_entries a WHERE a.id = e.id))`).Scan(&events, &entries, &missing)
	if err != nil {
		c.add("audit entries equal events", false, "%v", err)
		return
	}
	c.add("audit entries equal events", events == entries && missing == 0, "%d events, %d entries, %d events without one", events, entries, missing)
	cmd := exec.CommandContext(ctx, c.sys.o.binary, "audit", "verify")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+c.dbURL, "LOG_LEVEL=error")
	out, err := cmd.CombinedOutput()
	c.add("audit chains verify", err == nil, "%s", firstLine(string(out), err))
}

func firstLine(s string, err error) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndex(s, "\n"); i >= 0 {
		s = s[i+1:]
	}
	if err != nil {
		return err.Error() + ": " + s
	}
	return s
}

// replies: every posted message has exactly one reply, in the log and in the read model,
// and the webhook chatbot's workflow answered some (the webhook responder ran).
func (c *checker) replies(ctx context.Context) {
	var posted, replied, twice, failed, unanswered, rows, workflow int
	err := c.pool.QueryRow(ctx, `WITH m AS (SELECT stream_id, count(*) FILTER (WHERE type = 'message.posted') AS p,
			count(*) FILTER (WHERE type = 'message.replied') AS r, count(*) FILTER (WHERE type = 'message.failed') AS f
			FROM events WHERE stream_type = 'message' GROUP BY stream_id)
		SELECT coalesce(sum(p), 0), coalesce(sum(r), 0), count(*) FILTER (WHERE r > 1), coalesce(sum(f), 0),
			count(*) FILTER (WHERE p = 1 AND r = 0 AND f = 0),
			(SELECT count(*) FROM messages WHERE reply_to IS NOT NULL),
			(SELECT count(*) FROM events WHERE type = 'message.replied' AND data->>'source' = 'webhook')
		FROM m`).Scan(&posted, &replied, &twice, &failed, &unanswered, &rows, &workflow)
	if err != nil {
		c.add("each message answered once", false, "%v", err)
		return
	}
	c.add("each message answered once", posted > 0 && replied == posted && twice == 0 && failed == 0 && unanswered == 0 && rows == replied && workflow > 0,
		"%d posted (%d acknowledged by the load), %d replied (%d by the webhook chatbot's workflow), %d twice, %d failed, %d unanswered, %d replies readable",
		posted, c.l.posted, replied, workflow, twice, failed, unanswered, rows)
}

// cache: every cached user equals the read model (no stale entry survived).
func (c *checker) cache(ctx context.Context) {
	rdb := redis.NewClient(&redis.Options{Addr: c.sys.o.redis})
	defer rdb.Close()
	var ids []uuid.UUID
	iter := rdb.Scan(ctx, 0, c.n.redisPrefix+"user:*", 1000).Iterator()
	for iter.Next(ctx) {
		if u, err := uuid.Parse(strings.TrimPrefix(iter.Val(), c.n.redisPrefix+"user:")); err == nil {
			ids = append(ids, u)
		}
	}
	if err := iter.Err(); err != nil {
		c.add("cache equals the read model", false, "%v", err)
		return
	}
	want, err := readmodel.UserEntries(ctx, c.pool, ids)
	if err != nil {
		c.add("cache equals the read model", false, "%v", err)
		return
	}
	var stale []string
	for _, u := range ids {
		vals, err := rdb.HMGet(ctx, c.n.redisPrefix+"user:"+u.String(), "v", "d").Result()
		if err != nil {
			c.add("cache equals the read model", false, "%v", err)
			return
		}
		v, _ := vals[0].(string)
		d, _ := vals[1].(string)
		if v != fmt.Sprint(want[u].Version) || d != string(want[u].Payload) {
			stale = append(stale, fmt.Sprintf("%s cached v%s, read model v%d", u, v, want[u].Version))
		}
	}
	sort.Strings(stale)
	detail := fmt.Sprintf("%d cached users, %d stale", len(ids), len(stale))
	if len(stale) > 0 {
		detail += ": " + strings.Join(stale[:min(3, len(stale))], "; ")
	}
	c.add("cache equals the read model", len(stale) == 0 && len(ids) > 0, "%s", detail)
}

// dead: no dead letters but those the scenario meant.
func (c *checker) dead(ctx context.Context) {
	dead, err := deadLetters(ctx, c.n)
	if err != nil {
		c.add("no dead letters", false, "%v", err)
		return
	}
	want := c.expect.deadLetters
	ok := len(dead) == len(want)
	for k, v := range want {
		ok = ok && dead[k] == v
	}
	name := "no dead letters"
	if len(want) > 0 {
		name = "only the poison dead-lettered"
	}
	c.add(name, ok, "%v", dead)
}
