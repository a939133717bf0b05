package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/broker"
	"github.com/chatbotsaas/chatbotd/internal/db"
)

// httpFigures measures the whole binary over HTTP against a bare Gin service and the
// services' own tools, in the same run: commands at 32 connections, the time from a
// command's 2xx to its read model at half the peak command rate, cached reads, and the
// process's resident memory.
func httpFigures(ctx context.Context, o options, srv *server, pool *pgxpool.Pool, pgbench32 float64, alone commandSide, w io.Writer) error {
	rdb := redis.NewClient(&redis.Options{Addr: o.redisAddr, PoolSize: 64})
	defer rdb.Close()
	b, err := startBare(ctx, pool, rdb)
	if err != nil {
		return err
	}
	defer b.stop()
	time.Sleep(2 * time.Second) // let start-up work settle before the idle reading
	idle, _, err := residentMB(srv.pid)
	if err != nil {
		return err
	}
	const clients = benchClients
	user := func(i int) any {
		return map[string]string{"name": "Bench User", "email": fmt.Sprintf("u%d-%s@bench.example", i, uuid.NewString()[:8]),
			"password": "password1", "password_confirmation": "password1"}
	}
	noauth := fmt.Sprintf("?org=%s&user=%s", srv.org, srv.user)
	// measure warms the service up with the same load (its pool's connections opened,
	// its statements prepared, its caches filled: else the first figure of a run pays
	// for what the later ones find ready), settles the pipeline, then runs next from
	// every client for the duration. shares is the CPU of that last part (only: the
	// warm-up and the settling would dilute it with time the cores were idle).
	var shares map[string]float64
	measure := func(what string, want int, next request) (loadResult, error) {
		if _, err := closedLoop(srv.client, next, want, clients, min(time.Second, o.duration/2)); err != nil {
			return loadResult{}, fmt.Errorf("%s, warming up: %w", what, err)
		}
		if err := settle(ctx, pool, "bench.serve."); err != nil {
			return loadResult{}, err
		}
		var r loadResult
		var err error
		shares, err = cpuShares(func() (err error) {
			r, err = closedLoop(srv.client, next, want, clients, o.duration)
			return err
		})
		if err != nil {
			return r, fmt.Errorf("%s: %w", what, err)
		}
		fmt.Fprintf(os.Stderr, "%s: %.0f/s, p99 %s; CPU %s\n", what, r.rate, ms(r.p99), formatShares(shares))
		return r, nil
	}
	cmd := func(name string, next request) (loadResult, error) { return measure("commands, "+name, 201, next) }
	chatbotsJWT, err := cmd("POST /api/v1/chatbots", jsonRequest("POST", srv.base+"/api/v1/chatbots", srv.token, chatbotBody))
	if err != nil {
		return err
	}
	jwtShares := shares
	chatbotsOff, err := cmd("POST /bench/noauth/chatbots", jsonRequest("POST", srv.base+"/bench/noauth/chatbots"+noauth, "", chatbotBody))
	if err != nil {
		return err
	}
	chatbotsBare, err := cmd("bare POST /crud/chatbots", jsonRequest("POST", b.base+"/crud/chatbots", "", chatbotBody))
	if err != nil {
		return err
	}
	// The bare handler with its floor (floor.go), the floor's backlog written after the
	// warm-up and timed after the run.
	floorNext := jsonRequest("POST", b.base+"/crud/chatbots-projected", "", chatbotBody)
	if _, err := closedLoop(srv.client, floorNext, 201, clients, min(time.Second, o.duration/2)); err != nil {
		return fmt.Errorf("the floor, warming up: %w", err)
	}
	if err := b.floor.drain(ctx); err != nil {
		return err
	}
	chatbotsFloor, err := closedLoop(srv.client, floorNext, 201, clients, o.duration)
	if err != nil {
		return fmt.Errorf("the floor: %w", err)
	}
	began := time.Now()
	if err := b.floor.drain(ctx); err != nil {
		return err
	}
	floorInto := chatbotsFloor.rate * o.duration.Seconds() / (o.duration + time.Since(began)).Seconds()
	fmt.Fprintf(os.Stderr, "commands, bare + floor: %.0f/s, into the read model %.0f/s\n", chatbotsFloor.rate, floorInto)
	usersJWT, err := cmd("POST /api/v1/users", jsonRequest("POST", srv.base+"/api/v1/users", srv.token, user))
	if err != nil {
		return err
	}
	usersBare, err := cmd("bare POST /crud/users", jsonRequest("POST", b.base+"/crud/users", "", user))
	if err != nil {
		return err
	}
	if err := settle(ctx, pool, "bench.serve."); err != nil {
		return err
	}
	// The same command and its baseline again, driven from a process of their own.
	var outside strings.Builder
	if err := outOfProcess(ctx, o, srv, b, 2, &outside); err != nil {
		return err
	}
	// And through watermill's documented pipeline.
	if err := peerFigures(ctx, o, srv, pool, &outside); err != nil {
		return err
	}
	if err := settle(ctx, pool, "bench.serve."); err != nil {
		return err
	}
	profile := "bin/profile-commands.pb.gz"
	top, err := profileTop(ctx, srv.pprof, int(o.duration.Seconds()), profile, func() error {
		_, err := closedLoop(srv.client, jsonRequest("POST", srv.base+"/api/v1/chatbots", srv.token, chatbotBody), 201, clients, o.duration)
		return err
	})
	if err != nil {
		return err
	}

	// From a 2xx to the read model, at half the peak rate: one command in five is then
	// read with its consistency token, which answers once its chatbot is readable.
	if err := settle(ctx, pool, "bench.serve."); err != nil {
		return err
	}
	// After a second of the same load, as every figure here: the rate's step from idle
	// (new connections, the projector's batches growing) is not what it measures.
	half := chatbotsJWT.rate / 2
	if _, _, err := commandToRead(srv, half, min(time.Second, o.duration/2)); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	if err := settle(ctx, pool, "bench.serve."); err != nil {
		return err
	}
	cmdLat, readLat, halfStages, err := staged(srv, half, 2*o.duration)
	if err != nil {
		return err
	}
	fmt.Fprint(os.Stderr, halfStages)
	// And at a quarter: the closed-loop peak above defers the projectors' work, so half of
	// it may be more than the whole pipeline sustains.
	if err := settle(ctx, pool, "bench.serve."); err != nil {
		return err
	}
	quarter := chatbotsJWT.rate / 4
	cmdLat4, readLat4, err := commandToRead(srv, quarter, 2*o.duration)
	if err != nil {
		return err
	}

	// Cached reads.
	id, err := srv.createUser(-1)
	if err != nil {
		return err
	}
	st, env, err := srv.call("POST", "/api/v1/tokens", srv.token, map[string]any{"name": "bench", "abilities": []string{"users.read"}})
	if err != nil || st != 201 {
		return fmt.Errorf("create token: %d %v %v", st, env, err)
	}
	apiToken := env["data"].(map[string]any)["token"].(string)
	path := "/api/v1/users/" + id
	key := "bench:user:" + id
	if err := waitFor(ctx, 10*time.Second, func() (bool, error) {
		n, err := rdb.Exists(ctx, key).Result()
		return n == 1, err
	}); err != nil {
		return fmt.Errorf("user %s never cached: %w", id, err)
	}
	get := func(name string, next request) (loadResult, error) { return measure("cached GET, "+name, 200, next) }
	getBare, err := get("bare Redis GET", jsonRequest("GET", b.base+"/crud/cache?key="+key, "", nil))
	if err != nil {
		return err
	}
	getOff, err := get("authorization off", jsonRequest("GET", srv.base+"/bench/noauth/users/"+id+noauth, "", nil))
	if err != nil {
		return err
	}
	getJWT, err := get("JWT", jsonRequest("GET", srv.base+path, srv.token, nil))
	if err != nil {
		return err
	}
	getToken, err := get("API token", jsonRequest("GET", srv.base+path, apiToken, nil))
	if err != nil {
		return err
	}
	redisRate, err := redisBenchmark(ctx, o.redisAddr, clients, int(getBare.rate*o.duration.Seconds()*2))
	if err != nil {
		return err
	}
	if err := settle(ctx, pool, "bench.serve."); err != nil {
		return err
	}
	getHalf, _, err := openLoop(srv.client, jsonRequest("GET", srv.base+path, srv.token, nil), 200, getJWT.rate/2, 2*o.duration, nil)
	if err != nil {
		return fmt.Errorf("half-peak GET: %w", err)
	}
	fmt.Fprintf(os.Stderr, "cached GET at %.0f/s: p50 %s p99 %s\n", getJWT.rate/2, ms(getHalf.p50), ms(getHalf.p99))
	// The bare handler at the same rate from the same open loop: what this process's load
	// generator, sharing the cores, leaves of the p99 goal whatever the server.
	bareHalf, _, err := openLoop(srv.client, jsonRequest("GET", b.base+"/crud/cache?key="+key, "", nil), 200, getJWT.rate/2, 2*o.duration, nil)
	if err != nil {
		return fmt.Errorf("half-peak bare GET: %w", err)
	}
	fmt.Fprintf(os.Stderr, "bare GET at %.0f/s: p50 %s p99 %s\n", getJWT.rate/2, ms(bareHalf.p50), ms(bareHalf.p99))
	var outsideReads strings.Builder
	if err := outOfProcessReads(ctx, o, srv, b, path, key, 2, &outsideReads); err != nil {
		return err
	}
	rss, peak, err := residentMB(srv.pid)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "memory: idle %.0f MiB, now %.0f MiB, peak %.0f MiB\n", idle, rss, peak)

	fmt.Fprint(w, "\n### Commands over HTTP\n\n")
	fmt.Fprintf(w, "The whole binary (`chatbotd serve` with every role, built with `-tags benchnoauth`), %d keep-alive clients in this "+
		"process, %s each. Each figure follows a warm-up of one second with the same load. A command is "+
		"authenticated (JWT: signature, then the session's and the user's state and roles, read from the process's cache, "+
		"which the transactions that change them invalidate), rate limited (GCRA in Redis, taken in leases), validated, decided, appended (durable, group commit), and answered with its consistency token. "+
		"`POST /api/v1/chatbots` is the command class of `POST /api/v1/users` without its password: one event, a new stream. "+
		"`POST /api/v1/users` also hashes the password with argon2id (19 MiB, 2 passes; at most one per core at once) and reserves the email. "+
		"The bare service is Gin in this process: bind, validate, one INSERT of the same row into a copy of the read model's table, "+
		"answer it (no authentication, no log, no projection); its users handler hashes with the same argon2id. "+
		"The bare handler with its floor projection also has the chatbot's read-model row and audit entry written after it answers "+
		"(the floor, described with the figures from a load generator in its own process below). "+
		"pgbench appends one event per transaction at 32 clients (the 32-writer row of the appends table). "+
		"`serve --roles api` alone is the command side by itself, as when the relay and the projectors run on other machines: "+
		"the same binary on a database of its own with no relay and no projector, measured before the whole binary starts, "+
		"so that its events stay in the log and nothing else runs on the cores.\n\n", clients, o.duration)
	fmt.Fprint(w, "| command | commands/s | p50 | p99 | ratio to bare Gin | ratio to pgbench |\n|---|---:|---:|---:|---:|---:|\n")
	row := func(name string, r, bare loadResult) {
		toPgbench := "—" // -http-only runs no pgbench
		if pgbench32 > 0 {
			toPgbench = fmt.Sprintf("%.2f×", r.rate/pgbench32)
		}
		fmt.Fprintf(w, "| %s | %.0f | %s | %s | %.2f× | %s |\n", name, r.rate, ms(r.p50), ms(r.p99), r.rate/bare.rate, toPgbench)
	}
	row("bare Gin, insert chatbot row (baseline)", chatbotsBare, chatbotsBare)
	row("`POST /api/v1/chatbots`, JWT", chatbotsJWT, chatbotsBare)
	row("`POST /api/v1/chatbots`, authorization off", chatbotsOff, chatbotsBare)
	if alone.load.rate > 0 {
		row("`POST /api/v1/chatbots`, JWT, `serve --roles api` alone", alone.load, chatbotsBare)
	}
	row(fmt.Sprintf("bare Gin with its floor projection (into the read model: %.0f/s, %.2f×)", floorInto, floorInto/chatbotsBare.rate),
		chatbotsFloor, chatbotsBare)
	row("bare Gin, argon2id + insert user row (baseline)", usersBare, usersBare)
	row("`POST /api/v1/users`, JWT", usersJWT, usersBare)
	fmt.Fprintf(w, "\nCPU while `POST /api/v1/chatbots` ran at its peak, in cores of the machine's %d: %s.\n", runtime.NumCPU(), formatShares(jwtShares))
	if alone.load.rate > 0 {
		fmt.Fprintf(w, "\nThe same with `serve --roles api` alone: %s.\n", formatShares(alone.shares))
	}
	fmt.Fprintf(w, "\nThe first lines of a %s CPU profile of `chatbotd serve` during the same load (`PPROF_ADDR`; the profile is `%s`):\n\n```\n%s```\n",
		o.duration, profile, trimTop(top, 16))
	w.Write([]byte(outside.String()))

	fmt.Fprint(w, "\n### From a command's 2xx to the read model, at half the peak command rate\n\n")
	fmt.Fprintf(w, "`POST /api/v1/chatbots` sent at %.0f/s (half the peak above, after a second of the same load), then at a quarter, for %s each on a fixed schedule (open loop: a request "+
		"that is late counts from when it was due). One command in five is then read with `GET /api/v1/chatbots/{id}` and the "+
		"command's `X-Consistency-Token`, as a client reading its own write does: the server answers once the chatbots projection "+
		"has applied the command, woken by the projector's notification after its commit. The time runs from the command's 2xx to "+
		"that 200: the relay's wake-up and read, publish and confirm, RabbitMQ, projector batch, commit, the projector's NOTIFY, the read. "+
		"(Until issue 8's fourth pass the bench polled without the token, a GET every millisecond: at 1,200 commands/s those "+
		"polls were a load larger than the commands.)\n\n", half, 2*o.duration)
	fmt.Fprint(w, "The worst second is the highest p99 of any one second of the run (by when its commands were due): a p99 made by a "+
		"stall of a second or two shows there as one bad second among good ones.\n\n")
	fmt.Fprint(w, "| figure | samples | p50 | p99 | worst second's p99 | goal |\n|---|---:|---:|---:|---:|---|\n")
	for _, r := range []struct {
		rate      float64
		cmd, read loadResult
	}{{half, cmdLat, readLat}, {quarter, cmdLat4, readLat4}} {
		fmt.Fprintf(w, "| at %.0f/s: command, due → 2xx | %d | %s | %s | %s (second %d) | |\n", r.rate, int(r.cmd.rate*(2*o.duration).Seconds()),
			ms(r.cmd.p50), ms(r.cmd.p99), ms(r.cmd.worst), r.cmd.worstAt)
		fmt.Fprintf(w, "| at %.0f/s: 2xx → read model | %d | %s | %s | %s (second %d) | p99 < 100 ms |\n", r.rate, int(r.read.rate*(2*o.duration).Seconds()),
			ms(r.read.p50), ms(r.read.p99), ms(r.read.worst), r.read.worstAt)
	}
	fmt.Fprintf(w, "\nWhere the events went at %.0f/s (the server's metrics; ages from each event's append):\n\n```\n%s```\n", half, halfStages)

	fmt.Fprint(w, "\n### Cached reads\n\n")
	fmt.Fprintf(w, "`GET /api/v1/users/{id}`, a hit in the cache, from %d keep-alive clients, %s each: chatbotd answers it from its "+
		"process's copy of the Redis entry, which Redis's invalidations keep fresh (`REDIS_LOCAL_CACHE_ENTRIES`, on by default), "+
		"so a repeated read of one user costs no round trip. The bare service is Gin in this "+
		"process doing a Redis GET of the same entry for every request and answering its bytes. Authorization off is chatbotd's very handler mounted without "+
		"authentication (a route only the bench build has); with a JWT or an API token the request is also authenticated "+
		"(from the process's cache) and rate limited (in leases from Redis). redis-benchmark runs GET of 300 bytes from %d connections, without "+
		"pipelining: the ceiling of Redis itself. Then the JWT read is sent at half its peak on a fixed schedule for %s, and the bare "+
		"handler's at the same rate (in this process too: what the load generator leaves of a p99, whatever the server).\n\n",
		clients, o.duration, clients, 2*o.duration)
	fmt.Fprint(w, "| read | requests/s | p50 | p99 | ratio to bare Gin |\n|---|---:|---:|---:|---:|\n")
	fmt.Fprintf(w, "| redis-benchmark GET (Redis alone) | %.0f | | | %.2f× |\n", redisRate, redisRate/getBare.rate)
	for _, r := range []struct {
		name string
		res  loadResult
	}{{"bare Gin, Redis GET (baseline)", getBare}, {"authorization off", getOff}, {"JWT", getJWT}, {"API token", getToken}} {
		fmt.Fprintf(w, "| %s | %.0f | %s | %s | %.2f× |\n", r.name, r.res.rate, ms(r.res.p50), ms(r.res.p99), r.res.rate/getBare.rate)
	}
	fmt.Fprintf(w, "| JWT at %.0f/s (half its peak), open loop | %.0f | %s | %s | |\n", getJWT.rate/2, getHalf.rate, ms(getHalf.p50), ms(getHalf.p99))
	fmt.Fprintf(w, "| bare Gin at the same rate, open loop | %.0f | %s | %s | |\n", bareHalf.rate, ms(bareHalf.p50), ms(bareHalf.p99))
	w.Write([]byte(outsideReads.String()))

	fmt.Fprint(w, "\n### Resident memory of `chatbotd serve`\n\n")
	fmt.Fprint(w, "`VmRSS` of the process once it is ready and idle (every role running, pools open, the owner registered and "+
		"logged in), and `VmHWM` (its peak) after the loads above; with the default soft memory limit (`GOMEMLIMIT` unset: "+
		"150 MiB).\n\n")
	fmt.Fprintf(w, "| idle | peak | goals |\n|---:|---:|---|\n| %.0f MiB | %.0f MiB | ≤ 60 MB idle, ≤ 200 MB at peak |\n", idle, peak)
	return nil
}

// settle waits until the relay has published the whole log and every queue of the run
// is empty, so that one measurement does not pay for the backlog of the one before.
func settle(ctx context.Context, pool *pgxpool.Pool, queuePrefix string) error {
	start := time.Now()
	err := waitFor(ctx, 5*time.Minute, func() (bool, error) {
		// Behind in the relay's order (transaction id, then position), not by position alone:
		// the highest position may belong to an earlier transaction, already published.
		if relay, err := eventstore.RelayLag(ctx, pool, ""); err != nil || relay.Behind > 0 {
			return false, err
		}
		out, err := exec.CommandContext(ctx, "rabbitmqctl", "list_queues", "-q", "name", "messages").Output()
		if err != nil {
			return false, fmt.Errorf("rabbitmqctl list_queues: %w", err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			// The claim of the names (broker.ClaimQueues) always holds its one message.
			if len(f) == 2 && strings.HasPrefix(f[0], queuePrefix) && !strings.HasSuffix(f[0], ".dead") && !strings.HasSuffix(f[0], ".unrouted") &&
				f[0] != queuePrefix+broker.ClaimSuffix && f[1] != "0" {
				return false, nil
			}
		}
		return true, nil
	})
	if err == nil {
		fmt.Fprintf(os.Stderr, "settled in %s\n", time.Since(start).Round(time.Millisecond))
	}
	return err
}

// commandToRead sends POST /api/v1/chatbots at rate for d on a fixed schedule; one
// command in five is then read with its consistency token, which answers once its
// chatbot is readable. It returns the commands' latencies and the 2xx → readable ones.
func commandToRead(srv *server, rate float64, d time.Duration) (cmd, read loadResult, err error) {
	chatbot := func(i int) any { return map[string]string{"name": fmt.Sprintf("Paced bot %d", i)} }
	cmd, read, err = openLoop(srv.client, jsonRequest("POST", srv.base+"/api/v1/chatbots", srv.token, chatbot), 201, rate, d,
		func(i int, res *http.Response, body []byte) (time.Duration, bool, error) {
			if i%5 != 0 {
				return 0, false, nil
			}
			var env struct {
				Data struct {
					ID string `json:"id"`
				} `json:"data"`
			}
			if err := json.Unmarshal(body, &env); err != nil {
				return 0, false, err
			}
			// The read that a client wanting its own write sends: with the command's
			// consistency token the server answers once the projection has applied it.
			t0 := time.Now()
			req, err := jsonRequest("GET", srv.base+"/api/v1/chatbots/"+env.Data.ID, srv.token, nil)(i)
			if err != nil {
				return 0, false, err
			}
			req.Header.Set("X-Consistency-Token", res.Header.Get("X-Consistency-Token"))
			got, err := srv.client.Do(req)
			if err != nil {
				return 0, false, err
			}
			_, _ = io.Copy(io.Discard, got.Body)
			got.Body.Close()
			took := time.Since(t0)
			if got.StatusCode != 200 || got.Header.Get("X-Consistency") == "timeout" {
				return 0, false, fmt.Errorf("chatbot %s: %d (X-Consistency %q) after %s", env.Data.ID, got.StatusCode,
					got.Header.Get("X-Consistency"), took)
			}
			return took, true, nil
		})
	if err != nil {
		return cmd, read, fmt.Errorf("commands at %.0f/s: %w", rate, err)
	}
	fmt.Fprintf(os.Stderr, "commands at %.0f/s: p99 %s; 2xx to read model p50 %s p99 %s (worst second %d: %s)\n", rate, ms(cmd.p99), ms(read.p50),
		ms(read.p99), read.worstAt, ms(read.worst))
	return cmd, read, nil
}

// readModelAt measures the 2xx → read model latency alone, at rate, on the whole binary
// and a database of its own: the figure the full run takes at half the peak, at a rate
// chosen for an A/B of two builds. The first -duration is a warm-up, not counted.
func readModelAt(ctx context.Context, o options, rate float64) error {
	url, err := db.Recreate(ctx, o.server, o.database+"_e2e")
	if err != nil {
		return err
	}
	srv, err := startServer(ctx, o, url, "")
	if err != nil {
		return err
	}
	defer srv.stop()
	if _, _, err := commandToRead(srv, rate, o.duration); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	cmd, read, stages, err := staged(srv, rate, 2*o.duration)
	if err != nil {
		return err
	}
	fmt.Print(stages)
	fmt.Printf("commands at %.0f/s for %s: sent %.0f/s, command p50 %s p99 %s; 2xx → read model p50 %s p99 %s, worst second's p99 %s (second %d)\n",
		rate, 2*o.duration, cmd.rate, ms(cmd.p50), ms(cmd.p99), ms(read.p50), ms(read.p99), ms(read.worst), read.worstAt)
	return nil
}

// staged is commandToRead with where its events went (stagesOf) and the cores each
// program used meanwhile, as lines of text.
func staged(srv *server, rate float64, d time.Duration) (cmd, read loadResult, stages string, err error) {
	before, err := srv.metrics()
	if err != nil {
		return cmd, read, "", err
	}
	shares, err := cpuShares(func() (err error) {
		cmd, read, err = commandToRead(srv, rate, d)
		return err
	})
	if err != nil {
		return cmd, read, "", err
	}
	after, err := srv.metrics()
	if err != nil {
		return cmd, read, "", err
	}
	return cmd, read, stagesOf(before, after) + "cores: " + formatShares(shares) + "\n", nil
}

// stagesOf says where the events of a run went, from the server's metrics before and
// after it: the group's batches that held a chatbot's creation, the relay's batches and
// their confirms, and each event's age (from its append) when the relay read it, when
// the broker confirmed it, and when the chatbots projector's batch that applied it
// committed; the rest of a 2xx → read model is the waiting read's wake-up and answer. A
// stall shows in the stage where the ages jump.
func stagesOf(before, after map[string]float64) string {
	var b strings.Builder
	// The chatbots projector's batches are the group's batches that held a chatbot's
	// creation: each member's share is timed as the whole batch, commit included.
	const batches, applied = `chatbotd_projector_batch_duration_seconds_%s{projector="chatbots"}`, `chatbotd_projector_events_applied_total{projector="chatbots"}`
	delta := func(k string) float64 { return after[k] - before[k] }
	n := delta(fmt.Sprintf(batches, "count"))
	fmt.Fprintf(&b, "group batches with a chatbot: %.0f, %.1f chatbots a batch, %.2f ms a batch; more than 100 ms: %.0f\n",
		n, delta(applied)/n, 1000*delta(fmt.Sprintf(batches, "sum"))/n, n-delta(`chatbotd_projector_batch_duration_seconds_bucket{projector="chatbots",le="0.1"}`))
	// The time each relay batch waited for the broker's confirms: a stall of the broker's
	// disk shows here before anywhere else.
	const confirms = `chatbotd_relay_confirm_duration_seconds_%s`
	rb := delta(fmt.Sprintf(confirms, "count"))
	over := func(le string) float64 { return rb - delta(fmt.Sprintf(confirms, `bucket{le="`+le+`"}`)) }
	fmt.Fprintf(&b, "relay batches: %.0f, %.1f events a batch, confirmed in %.2f ms on average; after more than 100 ms: %.0f, 250 ms: %.0f, 500 ms: %.0f\n",
		rb, delta("chatbotd_relay_published_total")/rb, 1000*delta(fmt.Sprintf(confirms, "sum"))/rb, over("0.1"), over("0.25"), over("0.5"))
	age := func(h, labels string, q float64) string {
		return ms(histogramQuantile(before, after, h, labels, q))
	}
	fmt.Fprintf(&b, "event ages p50/p99: relay read %s/%s, confirmed %s/%s, chatbots applied %s/%s\n",
		age("chatbotd_relay_event_age_seconds", `step="read"`, .5), age("chatbotd_relay_event_age_seconds", `step="read"`, .99),
		age("chatbotd_relay_event_age_seconds", `step="confirmed"`, .5), age("chatbotd_relay_event_age_seconds", `step="confirmed"`, .99),
		age("chatbotd_projector_event_age_seconds", `projector="chatbots"`, .5), age("chatbotd_projector_event_age_seconds", `projector="chatbots"`, .99))
	// The chatbots' search entries merged into their GIN index beside the batches
	// (projections.PendingLists): merged inside one, 4 MB of them stalled every read model.
	fmt.Fprintf(&b, "GIN pending list of the chatbots' search: %.0f pages merged beside the batches\n",
		delta(`chatbotd_gin_pending_pages_merged_total{index="chatbots_search_idx"}`))
	// The collector: a heap near the soft memory limit is collected far more often.
	fmt.Fprintf(&b, "collector: %.0f cycles, pauses %.1f ms in all; heap %.0f → %.0f MiB, next cycle at %.0f MiB; process CPU %.2f s\n",
		delta("go_gc_duration_seconds_count"), 1000*delta("go_gc_duration_seconds_sum"), before["go_memstats_heap_alloc_bytes"]/(1<<20),
		after["go_memstats_heap_alloc_bytes"]/(1<<20), after["go_memstats_next_gc_bytes"]/(1<<20), delta("process_cpu_seconds_total"))
	return b.String()
}

// metrics reads the server's /metrics: each sample's value by its name and labels.
func (s *server) metrics() (map[string]float64, error) {
	res, err := s.client.Get(s.base + "/metrics")
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if f := strings.Fields(line); len(f) == 2 && !strings.HasPrefix(line, "#") {
			if v, err := strconv.ParseFloat(f[1], 64); err == nil {
				out[f[0]] = v
			}
		}
	}
	return out, nil
}

// histogramQuantile estimates quantile q of what histogram name (with labels, as the
// exposition writes them before le) observed between two scrapes, interpolating within
// the bucket as Prometheus's histogram_quantile does.
func histogramQuantile(before, after map[string]float64, name, labels string, q float64) time.Duration {
	type bucket struct{ le, count float64 }
	var bs []bucket
	prefix := name + "_bucket{" + labels + `,le="`
	for k, v := range after {
		le, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		bound, err := strconv.ParseFloat(strings.TrimSuffix(le, `"}`), 64)
		if err != nil {
			continue
		}
		bs = append(bs, bucket{bound, v - before[k]})
	}
	slices.SortFunc(bs, func(a, b bucket) int { return cmp.Compare(a.le, b.le) })
	if len(bs) == 0 || bs[len(bs)-1].count == 0 {
		return 0
	}
	rank, lower, below := q*bs[len(bs)-1].count, 0.0, 0.0
	for _, b := range bs {
		if b.count >= rank {
			if math.IsInf(b.le, 1) {
				return time.Duration(lower * float64(time.Second))
			}
			return time.Duration((lower + (b.le-lower)*(rank-below)/(b.count-below)) * float64(time.Second))
		}
		lower, below = b.le, b.count
	}
	return 0
}

// trimTop keeps pprof's header and the first n rows.
func trimTop(top string, n int) string {
	lines := strings.Split(top, "\n")
	var keep []string
	rows := 0
	for _, l := range lines {
		if strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Build ID:") || strings.HasPrefix(l, "Type:") || strings.HasPrefix(l, "Time:") {
			continue
		}
		if strings.TrimSpace(l) == "" {
			continue
		}
		keep = append(keep, l)
		if !strings.HasPrefix(strings.TrimSpace(l), "flat") && !strings.HasPrefix(l, "Duration") && !strings.HasPrefix(l, "Showing") {
			if rows++; rows >= n {
				break
			}
		}
	}
	return strings.Join(keep, "\n") + "\n"
}

// benchClients is the load generator's keep-alive clients for the figures over HTTP.
const benchClients = 32

func chatbotBody(i int) any {
	return map[string]string{"name": fmt.Sprintf("Bench bot %d", i), "description": "A chatbot made by the benchmark"}
}

// commandSide is the command side's figure alone, and the CPU it used.
type commandSide struct {
	load   loadResult
	shares map[string]float64
}

// commandsAlone measures POST /api/v1/chatbots against `serve --roles api` on a database
// of its own: the command path (authentication, rate limit, validation, decision, group
// commit) without the relay and projectors that share the cores in the whole binary.
func commandsAlone(ctx context.Context, o options) (commandSide, error) {
	url, err := db.Recreate(ctx, o.server, o.database+"_api")
	if err != nil {
		return commandSide{}, err
	}
	srv, err := startServer(ctx, o, url, "api")
	if err != nil {
		return commandSide{}, err
	}
	defer srv.stop()
	next := jsonRequest("POST", srv.base+"/api/v1/chatbots", srv.token, chatbotBody)
	if _, err := closedLoop(srv.client, next, 201, benchClients, min(time.Second, o.duration/2)); err != nil {
		return commandSide{}, fmt.Errorf("commands, api role alone, warming up: %w", err)
	}
	var r loadResult
	shares, err := cpuShares(func() (err error) {
		r, err = closedLoop(srv.client, next, 201, benchClients, o.duration)
		return err
	})
	if err != nil {
		return commandSide{}, fmt.Errorf("commands, api role alone: %w", err)
	}
	fmt.Fprintf(os.Stderr, "commands, POST /api/v1/chatbots, api role alone: %.0f/s, p99 %s\n", r.rate, ms(r.p99))
	return commandSide{load: r, shares: shares}, nil
}
