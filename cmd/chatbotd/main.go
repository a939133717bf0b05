// Command chatbotd is the one binary of the platform: `serve` runs the API, the relay,
// the projectors and workers (all by default; --roles picks some), `migrate` applies the
// database migrations, and the operators' commands rebuild projections, verify and prune
// the audit trail and replay history.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/chatbotsaas/chatbotd/internal/config"
	"github.com/chatbotsaas/chatbotd/internal/db"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		softMemoryLimit()
	}
	m := &Main{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Environ: os.Environ()}
	if err := m.Run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "chatbotd:", err)
		os.Exit(1)
	}
}

// defaultMemoryLimit is the server's soft memory limit when GOMEMLIMIT is not set. The
// collector lets the heap double between cycles (GOGC=100); under load (four argon2id
// hashes of 19 MiB at once, a 16 MiB knowledge import) that headroom alone takes the
// process past 200 MB. Near this limit it collects sooner instead. It is soft: a heap
// that truly needs more gets it, with the collector's CPU capped at half.
const defaultMemoryLimit = 150 << 20

// defaultGCPercent is the server's GOGC when GOGC is not set: the heap may grow to five
// times what is live between cycles, but never past the soft memory limit, near which
// the collector runs sooner whatever GOGC says. At the default of 100 a small live heap
// (about 30 MiB serving commands) was collected so often that marking took a sixth of
// the process's CPU; the peak stays bounded by the limit and the idle size is the same
// (BENCHMARKS.md has the figures).
const defaultGCPercent = 400

// softMemoryLimit sets defaultMemoryLimit unless GOMEMLIMIT says otherwise, and
// defaultGCPercent unless GOGC does (the runtime has read both already). Only serve has
// them: tests run Main in-process, and the one-off commands (a rebuild of millions of
// events) are better off without a limit.
func softMemoryLimit() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
}

// Main is one run of the program, with its outside world passed in so that a test can
// run it in-process.
type Main struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Environ        []string
	// Listening, when set, receives the API's address once it accepts connections.
	Listening chan<- string
}

const usage = `usage: chatbotd <command> [flags]

commands:
  serve [--roles api,relay,projectors]   run the system (all roles by default)
  migrate                                create the database if missing and apply migrations
  projections rebuild NAME... | --all    replay the log into fresh tables and swap them in
        [--restore-pruned]               (audit: bring back pruned entries) [--batch N]
  projections verify NAME... | --all     replay the log into scratch tables and compare them with
        [--wait 30s]                     the live ones, row by row; fails if one differs
  projections status [--json]            the relay's and each projection's position, lag, dead letters
  projections dead-letters NAME [--limit N]   list a projection's dead-lettered events (JSON lines)
  projections redrive NAME [--limit N]   send them back to the projection's queue, after a fix
  admin create --email E --name N        make a platform operator account (password on stdin)
  audit verify [--organization ID]       recompute the tamper-evidence chains; fails if one is bad
  audit prune [--days N] [--export F]    remove audit entries older than N days (AUDIT_RETENTION_DAYS)
  replay [--organization ID|none] [--stream ID] [--type T,...] [--from T] [--to T] [--after POS]
                                         the event log as NDJSON on stdout, in commit order
`

// Run runs one command until it finishes or ctx ends.
func (m *Main) Run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(m.Stderr, usage)
		return errors.New("no command given")
	}
	cfg, err := config.Load(m.Environ)
	if err != nil {
		return fmt.Errorf("configuration: %s", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	// Logs go to stdout for the server, to stderr for the commands whose stdout is data.
	logOut := m.Stderr
	if args[0] == "serve" {
		logOut = m.Stdout
	}
	logger := newLogger(logOut, cfg.LogLevel)
	switch args[0] {
	case "serve":
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		fs.SetOutput(m.Stderr)
		roles := fs.String("roles", "api,relay,projectors", "comma-separated roles to run: api, relay, projectors")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		set, err := parseRoles(*roles)
		if err != nil {
			return err
		}
		return m.serve(ctx, cfg, set, logger)
	case "migrate":
		return migrate(ctx, cfg, logger)
	case "projections":
		return m.projectionsCommand(ctx, cfg, logger, args[1:])
	case "audit":
		return m.auditCommand(ctx, cfg, logger, args[1:])
	case "admin":
		return m.adminCommand(ctx, cfg, logger, args[1:], m.Stdin)
	case "replay":
		return m.replay(ctx, cfg, logger, args[1:])
	case "help", "-h", "--help":
		fmt.Fprint(m.Stdout, usage)
		return nil
	default:
		fmt.Fprint(m.Stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))
}

// Roles.
const (
	roleAPI        = "api"
	roleRelay      = "relay"
	roleProjectors = "projectors"
)

func parseRoles(s string) (map[string]bool, error) {
	set := map[string]bool{}
	for _, r := range strings.Split(s, ",") {
		r = strings.TrimSpace(r)
		switch r {
		case roleAPI, roleRelay, roleProjectors:
			set[r] = true
		case "":
		default:
			return nil, fmt.Errorf("unknown role %q (roles: api, relay, projectors)", r)
		}
	}
	if len(set) == 0 {
		return nil, errors.New("--roles names no role")
	}
	return set, nil
}

func migrate(ctx context.Context, cfg config.Config, logger *slog.Logger) error {
	if err := db.EnsureDatabase(ctx, cfg.DatabaseURL); err != nil {
		return err
	}
	pool, err := db.Open(ctx, cfg.DatabaseURL, 4)
	if err != nil {
		return err
	}
	defer pool.Close()
	return db.Migrate(ctx, pool, logger)
}
