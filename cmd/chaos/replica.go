package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgPair is a PostgreSQL primary with a streaming replica, clusters of their own on this
// machine beside the shared one (which they leave alone): the primary on 5442 commits
// synchronously (synchronous_standby_names = '*', so what it acknowledged is on the
// replica), the replica on 5443 is made with pg_basebackup -R and applies what it
// receives delay later (recovery_min_apply_delay), so reads from it lag.
type pgPair struct {
	version          string
	primary, replica string // cluster names
	primaryPort      int
	replicaPort      int
}

func startPGPair(ctx context.Context, version string, delay time.Duration) (*pgPair, error) {
	p := &pgPair{version: version, primary: "chaosprimary", replica: "chaosreplica", primaryPort: 5442, replicaPort: 5443}
	p.drop() // what an interrupted run left
	conf := func(cluster, text string) error {
		return os.WriteFile(filepath.Join("/etc/postgresql", version, cluster, "conf.d", "chaos.conf"), []byte(text), 0o644)
	}
	if _, err := sh(ctx, "pg_createcluster", version, p.primary, "-p", fmt.Sprint(p.primaryPort), "--", "--auth=trust"); err != nil {
		return nil, err
	}
	if err := conf(p.primary, "listen_addresses = '127.0.0.1'\nmax_connections = 300\nsynchronous_standby_names = '*'\n"); err != nil {
		p.drop()
		return nil, err
	}
	if _, err := sh(ctx, "pg_ctlcluster", "--skip-systemctl-redirect", version, p.primary, "start"); err != nil {
		p.drop()
		return nil, err
	}
	if _, err := sh(ctx, "pg_createcluster", version, p.replica, "-p", fmt.Sprint(p.replicaPort), "--", "--auth=trust"); err != nil {
		p.drop()
		return nil, err
	}
	// pg_basebackup fills the new cluster's (emptied) data directory, which postgres owns.
	data := filepath.Join("/var/lib/postgresql", version, p.replica)
	entries, err := os.ReadDir(data)
	if err != nil {
		p.drop()
		return nil, err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(data, e.Name())); err != nil {
			p.drop()
			return nil, err
		}
	}
	if _, err := sh(ctx, "runuser", "-u", "postgres", "--", filepath.Join("/usr/lib/postgresql", version, "bin", "pg_basebackup"),
		"-h", "127.0.0.1", "-p", fmt.Sprint(p.primaryPort), "-U", "postgres", "-D", data, "-R", "-X", "stream"); err != nil {
		p.drop()
		return nil, err
	}
	if err := conf(p.replica, fmt.Sprintf("listen_addresses = '127.0.0.1'\nmax_connections = 300\nrecovery_min_apply_delay = '%dms'\n",
		delay.Milliseconds())); err != nil {
		p.drop()
		return nil, err
	}
	if _, err := sh(ctx, "pg_ctlcluster", "--skip-systemctl-redirect", version, p.replica, "start"); err != nil {
		p.drop()
		return nil, err
	}
	err = waitFor(ctx, time.Minute, func() (bool, error) {
		conn, err := pgx.Connect(ctx, p.url(p.primaryPort, "postgres"))
		if err != nil {
			return false, nil
		}
		defer conn.Close(ctx)
		var sync bool
		err = conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_replication WHERE state = 'streaming' AND sync_state = 'sync')`).Scan(&sync)
		return err == nil && sync, nil
	})
	if err != nil {
		p.drop()
		return nil, fmt.Errorf("the replica never streamed synchronously: %w", err)
	}
	return p, nil
}

func (p *pgPair) url(port int, database string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", port, database)
}

// writeURL is the multi-host DATABASE_URL: whichever of the two takes writes.
func (p *pgPair) writeURL(database string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d,127.0.0.1:%d/%s?sslmode=disable&target_session_attrs=read-write",
		p.primaryPort, p.replicaPort, database)
}

// failover stops the primary as a crash would (immediate mode) and promotes the replica.
func (p *pgPair) failover(ctx context.Context) error {
	if _, err := sh(ctx, "pg_ctlcluster", "--skip-systemctl-redirect", p.version, p.primary, "stop", "-m", "immediate"); err != nil {
		return err
	}
	_, err := sh(ctx, "pg_ctlcluster", "--skip-systemctl-redirect", p.version, p.replica, "promote")
	return err
}

// drop stops and removes both clusters. pg_dropcluster leaves a cluster's configuration
// behind when its data directory is gone already (it calls the cluster corrupted), and
// pg_createcluster then refuses the name: what it leaves is removed too.
func (p *pgPair) drop() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, c := range []string{p.replica, p.primary} {
		_, _ = sh(ctx, "pg_ctlcluster", "--skip-systemctl-redirect", p.version, c, "stop", "-m", "immediate")
		_, _ = sh(ctx, "pg_dropcluster", "--stop", p.version, c)
		_ = os.RemoveAll(filepath.Join("/etc/postgresql", p.version, c))
		_ = os.RemoveAll(filepath.Join("/var/lib/postgresql", p.version, c))
		_ = os.Remove(filepath.Join("/var/log/postgresql", "postgresql-"+p.version+"-"+c+".log"))
	}
}

// replicaLag checks, with queries served by the lagging replica: a read with the
// command's consistency token sees the command every time; a read without one sees it
// within a bound (and, the replica lagging, often not at once). Then the primary crashes
// and the replica is promoted: commands go on against it through the multi-host URL, and
// the common invariants (nothing acknowledged lost) are checked on it.
func replicaLag(ctx context.Context, r *scenarioRun) error {
	const rounds = 20
	missed, firstMiss := 0, 0
	var worst time.Duration
	for i := range rounds {
		for _, withToken := range []bool{true, false} {
			res, err := r.c.raw(ctx, "POST", "/api/v1/chatbots", map[string]any{"name": fmt.Sprintf("Lag %d %v", i, withToken)}, nil)
			if err != nil || res.status != 201 {
				return fmt.Errorf("create a chatbot: %d %v", res.status, err)
			}
			path := "/api/v1/chatbots/" + id(res.env)
			if withToken {
				got, err := r.c.raw(ctx, "GET", path, nil, map[string]string{"X-Consistency-Token": res.header.Get("X-Consistency-Token")})
				if err != nil || got.status != 200 {
					missed++
				}
				continue
			}
			began := time.Now()
			for attempt := 0; ; attempt++ {
				got, err := r.c.raw(ctx, "GET", path, nil, nil)
				if err == nil && got.status == 200 {
					break
				}
				if attempt == 0 {
					firstMiss++
				}
				if time.Since(began) > 10*time.Second {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			worst = max(worst, time.Since(began))
		}
	}
	r.chk.add("read-your-writes on the replica", missed == 0, "%d of %d reads with the command's token did not see it", missed, rounds)
	r.chk.add("bounded staleness without a token", worst < 3*time.Second,
		"seen at most %s after the 201; %d of %d first reads did not see it yet (the replica applies 300 ms late)",
		worst.Round(time.Millisecond), firstMiss, rounds)

	began := time.Now()
	if err := r.pg.failover(ctx); err != nil {
		return err
	}
	err := waitFor(ctx, 2*time.Minute, func() (bool, error) {
		res, err := r.c.raw(ctx, "POST", "/api/v1/chatbots", map[string]any{"name": "After the failover"}, nil)
		return err == nil && res.status == 201, nil
	})
	took := time.Since(began)
	got := r.during(ctx, 5*time.Second)
	r.chk.add("commands go on against the promoted replica", err == nil && twoXX(got) > 0 && got[500] == 0,
		"first 201 %s after the primary crashed; then %s", took.Round(10*time.Millisecond), statusLine(got))
	return err
}
