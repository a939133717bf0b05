package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/chatbotsaas/chatbotd/command"
	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/auth"
	"github.com/chatbotsaas/chatbotd/internal/config"
	"github.com/chatbotsaas/chatbotd/projections"
)

// The platform operators' commands: projections status, dead letters and redrive, and
// admin create. Like the others they apply pending migrations first and write results
// to stdout.

// operatorDeps opens what these commands need (the database and the broker).
func operatorDeps(ctx context.Context, cfg config.Config, logger *slog.Logger) (*deps, error) {
	if err := migrate(ctx, cfg, logger); err != nil {
		return nil, err
	}
	return openDeps(ctx, cfg, logger)
}

// projectionsStatus prints the relay's and each projection's progress: a table, or the
// JSON of GET /api/v1/admin/projections with --json.
func (m *Main) projectionsStatus(ctx context.Context, cfg config.Config, logger *slog.Logger, args []string) error {
	fs := flag.NewFlagSet("projections status", flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	if err := fs.Parse(args); err != nil {
		return err
	}
	d, err := operatorDeps(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer d.close()
	st, err := d.status(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(m.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	fmt.Fprintf(m.Stdout, "relay: position %d, %d events behind, lag %.1fs\n\n", st.Relay.Position, st.Relay.Behind, st.Relay.LagSeconds)
	w := tabwriter.NewWriter(m.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "PROJECTION\tPOSITION\tAPPLIED\tQUEUED\tLAG\tDEAD\tCONSUMERS\tLAST BATCH")
	num := func(p *int) string {
		if p == nil {
			return "?"
		}
		return fmt.Sprint(*p)
	}
	for _, p := range st.Projections {
		pos, last, lag := "-", "-", "-"
		if p.Position != nil {
			pos = fmt.Sprint(*p.Position)
		}
		if p.UpdatedAt != nil {
			last = p.UpdatedAt.UTC().Format(time.RFC3339)
		}
		if p.LagSeconds != nil {
			lag = fmt.Sprintf("%.1fs", *p.LagSeconds)
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", p.Name, pos, p.EventsApplied, num(p.Queued), lag,
			num(p.DeadLettered), num(p.Consumers), last)
	}
	return w.Flush()
}

// deadLetters lists (as JSON lines) or redrives a projection's dead-lettered events.
func (m *Main) deadLetters(ctx context.Context, cfg config.Config, logger *slog.Logger, verb string, args []string) error {
	fs := flag.NewFlagSet("projections "+verb, flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	limit := fs.Int("limit", 1000, "at most this many events")
	names, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(names) != 1 || *limit < 1 {
		return fmt.Errorf("usage: chatbotd projections %s NAME [--limit N]", verb)
	}
	d, err := operatorDeps(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer d.close()
	tracked, err := d.tracked()
	if err != nil {
		return err
	}
	var known []string
	for _, t := range tracked {
		known = append(known, t.Name)
		if t.Name != names[0] {
			continue
		}
		bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if verb == "redrive" {
			moved, err := projections.Redrive(bctx, d.broker, t.Queue, *limit)
			fmt.Fprintf(m.Stdout, "%d dead-lettered events of %s sent back to %s\n", moved, t.Name, t.Queue.Name)
			return err
		}
		list, err := projections.ListDeadLetters(bctx, d.broker, t.Queue, *limit)
		if err != nil {
			return err
		}
		enc := json.NewEncoder(m.Stdout)
		for _, l := range list {
			if err := enc.Encode(l); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("no projection %q (projections: %s)", names[0], strings.Join(known, ", "))
}

// adminCommand is `chatbotd admin create`: it makes a platform operator account. The
// password is read from stdin (one line), never from the command line, where other users
// of the machine could see it.
func (m *Main) adminCommand(ctx context.Context, cfg config.Config, logger *slog.Logger, args []string, stdin io.Reader) error {
	if len(args) == 0 || args[0] != "create" {
		return errors.New("usage: chatbotd admin create --email E --name N < password")
	}
	fs := flag.NewFlagSet("admin create", flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	email := fs.String("email", "", "the operator's email (their login)")
	name := fs.String("name", "", "the operator's name")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if stdin == nil {
		stdin = os.Stdin
	}
	line, err := bufio.NewReader(io.LimitReader(stdin, 4096)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read the password from stdin: %w", err)
	}
	password := strings.TrimRight(line, "\r\n")
	d, err := operatorDeps(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer d.close()
	svc := command.NewService(command.Deps{Store: d.store, Hasher: auth.NewHasher(cfg.PasswordHashConcurrency), Logger: logger})
	rid := "cli-" + uuid.NewString()
	res, err := svc.CreateOperator(ctx, events.Meta{RequestID: rid, CorrelationID: rid},
		command.CreateOperator{Name: *name, Email: *email, Password: password})
	var ae *apperr.Error
	if errors.As(err, &ae) && len(ae.Fields) > 0 {
		var parts []string
		for field, msgs := range ae.Fields {
			parts = append(parts, "--"+field+" "+strings.Join(msgs, ", "))
		}
		slices.Sort(parts)
		return fmt.Errorf("%s: %s", ae.Message, strings.Join(parts, "; "))
	}
	if err != nil {
		return err
	}
	enc := json.NewEncoder(m.Stdout)
	return enc.Encode(map[string]any{"operator": res.Data})
}
