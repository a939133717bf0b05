package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"
)

// bombardier is the load generator in its own process: codesenberg/bombardier, a tool of
// the module, built once into bin/ by the bench. A load generator in the bench's own
// process takes its share of the same two cores as the service it measures, and puts
// its own garbage collector in every figure; this one does too (one machine), but as an
// outside client would, and the same for chatbotd and the baseline.
type bombardier struct{ path string }

func buildBombardier(ctx context.Context) (bombardier, error) {
	path := "bin/bombardier"
	cmd := exec.CommandContext(ctx, "go", "build", "-o", path, "github.com/codesenberg/bombardier")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return bombardier{}, fmt.Errorf("build bombardier: %w", err)
	}
	return bombardier{path: path}, nil
}

// bombardChatbots builds bombardier and the one body its POSTs of a chatbot send.
func bombardChatbots(ctx context.Context) (bombardier, []byte, error) {
	bomb, err := buildBombardier(ctx)
	if err != nil {
		return bomb, nil, err
	}
	body, err := json.Marshal(chatbotInput{Name: "Bombarded bot", Description: "the same body every time"})
	return bomb, body, err
}

// bombardResult is one run: 2xx answers per second, and latency percentiles of every
// answer.
type bombardResult struct {
	rate          float64
	count         uint64 // 2xx answers
	p50, p99      time.Duration
	other, errors uint64        // answers that were not 2xx, and failed requests
	taken         time.Duration // bombardier's own measure of the run
	behind        time.Duration // after the run, until its work was done (the floor's rows written)
}

// post sends the same JSON body to url from clients connections for d.
func (b bombardier) post(ctx context.Context, url, token string, body []byte, clients int, d time.Duration) (bombardResult, error) {
	return b.run(ctx, url, token, clients, d, "-m", "POST", "-H", "Content-Type: application/json", "-b", string(body))
}

// get sends GETs of url from clients connections for d; at a rate (per second) when rate
// is above 0, else as fast as the answers come.
func (b bombardier) get(ctx context.Context, url, token string, clients int, d time.Duration, rate float64) (bombardResult, error) {
	var args []string
	if rate > 0 {
		args = []string{"-r", fmt.Sprint(int(rate))}
	}
	return b.run(ctx, url, token, clients, d, args...)
}

func (b bombardier) run(ctx context.Context, url, token string, clients int, d time.Duration, more ...string) (bombardResult, error) {
	args := append([]string{"-c", fmt.Sprint(clients), "-d", d.String(), "-l", "-p", "r", "-o", "json"}, more...)
	if token != "" {
		args = append(args, "-H", "Authorization: Bearer "+token)
	}
	out, err := exec.CommandContext(ctx, b.path, append(args, url)...).Output()
	if err != nil {
		return bombardResult{}, fmt.Errorf("bombardier %s: %w", url, err)
	}
	var r struct {
		Result struct {
			TimeTakenSeconds               float64
			Req2xx, Req1xx, Req3xx, Req4xx uint64
			Req5xx, Others                 uint64
			Latency                        struct{ Percentiles map[string]float64 }
		}
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return bombardResult{}, fmt.Errorf("bombardier's output: %w: %s", err, out)
	}
	res := r.Result
	us := func(p string) time.Duration {
		return time.Duration(res.Latency.Percentiles[p] * float64(time.Microsecond))
	}
	return bombardResult{rate: float64(res.Req2xx) / res.TimeTakenSeconds, count: res.Req2xx, p50: us("50"), p99: us("99"),
		other: res.Req1xx + res.Req3xx + res.Req4xx + res.Req5xx, errors: res.Others,
		taken: time.Duration(res.TimeTakenSeconds * float64(time.Second))}, nil
}

// outOfProcess measures the whole binary's POST /api/v1/chatbots (a real JWT) against
// the bare Gin + pgx handler's POST /crud/chatbots, each driven by bombardier with 32
// connections, in alternating rounds, and writes the table.
func outOfProcess(ctx context.Context, o options, srv *server, b *bare, rounds int, w io.Writer) error {
	bomb, body, err := bombardChatbots(ctx)
	if err != nil {
		return err
	}
	const clients = 32
	ours, theirs, err := alternate(rounds, target{srv.base + "/api/v1/chatbots", srv.token}, target{b.base + "/crud/chatbots", ""},
		func(t target) (bombardResult, error) {
			return bomb.post(ctx, t.url, t.token, body, clients, o.duration)
		})
	if err != nil {
		return err
	}
	fmt.Fprint(w, "\n### Commands driven by a load generator in its own process\n\n")
	fmt.Fprintf(w, "bombardier (a tool of the module, built by the bench) with %d connections for %s per round, rounds "+
		"alternating between chatbotd's `POST /api/v1/chatbots` with a real JWT (the whole binary: every role) and the bare "+
		"Gin + pgx handler inserting the same row (`POST /crud/chatbots`); the same body every time.\n\n", clients, o.duration)
	writeRounds(w, ours, theirs)
	return floorRounds(ctx, o, b, bomb, body, clients, rounds, w)
}

// floorRounds measures the bare handler with its floor (see floor) against the bare
// handler alone, in alternating rounds, and writes the table: about the most that
// chatbotd's ratio above could be on these cores, given what its API promises of a
// command.
func floorRounds(ctx context.Context, o options, b *bare, bomb bombardier, body []byte, clients, rounds int, w io.Writer) error {
	projected := b.base + "/crud/chatbots-projected"
	floors, bares, err := alternate(rounds, target{projected, ""}, target{b.base + "/crud/chatbots", ""},
		func(t target) (bombardResult, error) {
			r, err := bomb.post(ctx, t.url, t.token, body, clients, o.duration)
			if err != nil || t.url != projected {
				return r, err
			}
			began := time.Now()
			err = b.floor.drain(ctx)
			r.behind = time.Since(began)
			return r, err
		})
	if err != nil {
		return err
	}
	fmt.Fprint(w, "\nThe floor: the bare handler with the least projection that gives what chatbotd's API promises of the command "+
		"(`POST /crud/chatbots-projected`, `cmd/bench/floor.go`): after its insert has answered, one goroutine writes the chatbot's "+
		"read-model row and its audit entry, in batches of up to 200 (one transaction, one INSERT of arrays per table), into copies of "+
		"`chatbots` and `audit_entries` with all of their indexes (the list's search and order; the audit log's filters). No event log, "+
		"broker, stream versions, hash chain or cache. Rounds alternate with the bare handler alone, by bombardier as above; *into the "+
		"read model* counts until the floor has written the round's last row.\n\n")
	fmt.Fprint(w, "| round | bare + floor 2xx/s | p99 | into the read model/s | bare 2xx/s | p99 | ratio | ratio into the read model |\n"+
		"|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	var best float64
	for i := range floors {
		f, c := floors[i], bares[i]
		into := float64(f.count) / (f.taken + f.behind).Seconds()
		best = max(best, into/c.rate)
		fmt.Fprintf(w, "| %d | %.0f | %s | %.0f | %.0f | %s | %.2f× | %.2f× |\n", i+1, f.rate, ms(f.p99), into, c.rate, ms(c.p99),
			f.rate/c.rate, into/c.rate)
	}
	fmt.Fprintf(w, "\nThe floor's best ratio into the read model: **%.2f×**, against the bare handler in the same round.\n", best)
	fmt.Fprintf(os.Stderr, "floor: best %.2f× into the read model\n", best)
	return nil
}

// target is a URL bombarded, with its bearer token ("": none).
type target struct{ url, token string }

// alternate runs call on ours, then on the baseline, rounds times, and returns the
// results of each side; a round with an answer that is not 2xx is an error.
func alternate(rounds int, ours, baseline target, call func(target) (bombardResult, error)) (a, b []bombardResult, err error) {
	for i := range rounds {
		for _, run := range []struct {
			t    target
			into *[]bombardResult
		}{{ours, &a}, {baseline, &b}} {
			r, err := call(run.t)
			if err != nil {
				return nil, nil, err
			}
			if r.other > 0 || r.errors > 0 {
				return nil, nil, fmt.Errorf("round %d, %s: %d answers not 2xx, %d failed requests", i+1, run.t.url, r.other, r.errors)
			}
			*run.into = append(*run.into, r)
			fmt.Fprintf(os.Stderr, "bombardier round %d %s: %.0f/s, p99 %s\n", i+1, run.t.url, r.rate, ms(r.p99))
		}
	}
	return a, b, nil
}

// writeRounds writes the table of alternating rounds.
func writeRounds(w io.Writer, ours, theirs []bombardResult) {
	fmt.Fprint(w, "| round | chatbotd 2xx/s | p50 | p99 | bare 2xx/s | p50 | p99 | ratio | p99 ratio |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for i := range ours {
		a, c := ours[i], theirs[i]
		fmt.Fprintf(w, "| %d | %.0f | %s | %s | %.0f | %s | %s | %.2f× | %.1f× |\n", i+1, a.rate, ms(a.p50), ms(a.p99),
			c.rate, ms(c.p50), ms(c.p99), a.rate/c.rate, float64(a.p99)/float64(c.p99))
	}
}

// outOfProcessReads measures the cached GET of a user with a JWT against the bare Gin +
// Redis handler's GET of the same entry, each driven by bombardier with 32 connections in
// alternating rounds, then chatbotd's at half its peak, and writes the table.
func outOfProcessReads(ctx context.Context, o options, srv *server, b *bare, path, key string, rounds int, w io.Writer) error {
	bomb, err := buildBombardier(ctx)
	if err != nil {
		return err
	}
	const clients = 32
	ours, theirs, err := alternate(rounds, target{srv.base + path, srv.token}, target{b.base + "/crud/cache?key=" + key, ""},
		func(t target) (bombardResult, error) { return bomb.get(ctx, t.url, t.token, clients, o.duration, 0) })
	if err != nil {
		return err
	}
	var peak float64
	for _, r := range ours {
		peak = max(peak, r.rate)
	}
	half, err := bomb.get(ctx, srv.base+path, srv.token, clients, 2*o.duration, peak/2)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bombardier GET at %.0f/s: p50 %s p99 %s\n", peak/2, ms(half.p50), ms(half.p99))
	// The bare handler at the same rate: what the load generator and the machine leave of
	// the p99 goal, whatever the server.
	bareHalf, err := bomb.get(ctx, b.base+"/crud/cache?key="+key, "", clients, 2*o.duration, peak/2)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bombardier bare GET at %.0f/s: p50 %s p99 %s\n", peak/2, ms(bareHalf.p50), ms(bareHalf.p99))
	fmt.Fprint(w, "\n### Cached reads driven by a load generator in its own process\n\n")
	fmt.Fprintf(w, "bombardier with %d connections for %s per round, rounds alternating between chatbotd's `GET /api/v1/users/{id}` "+
		"with a real JWT (a hit in the process's copy of the Redis entry, as above) and the bare Gin + Redis handler's GET of the same entry; then chatbotd's at half its "+
		"best round's rate (bombardier's `-r`: paced, so a late answer delays the next request on its connection) for %s, "+
		"and the bare handler's at the same rate.\n\n",
		clients, o.duration, 2*o.duration)
	writeRounds(w, ours, theirs)
	fmt.Fprintf(w, "| at %.0f/s (half) | %.0f | %s | %s | %.0f | %s | %s | | %.1f× |\n", peak/2, half.rate, ms(half.p50), ms(half.p99),
		bareHalf.rate, ms(bareHalf.p50), ms(bareHalf.p99), float64(half.p99)/float64(bareHalf.p99))
	return nil
}
