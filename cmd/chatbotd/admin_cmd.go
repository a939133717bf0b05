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

	"github.com/google/uuid"

	"github.com/chatbotsaas/chatbotd/command"
	"github.com/chatbotsaas/chatbotd/command/domain"
	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/auth"
	"github.com/chatbotsaas/chatbotd/internal/config"
)

// `chatbotd admin create`: a platform operator's account. Like every operator command it
// applies pending migrations first and writes its result to stdout.

// operatorDeps opens what the operator commands that ask the broker need (the database
// and the broker).
func operatorDeps(ctx context.Context, cfg config.Config, logger *slog.Logger) (*deps, error) {
	if err := migrate(ctx, cfg, logger); err != nil {
		return nil, err
	}
	return openDeps(ctx, cfg, logger)
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
		domain.CreateOperator{Name: *name, Email: *email, Password: password})
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
