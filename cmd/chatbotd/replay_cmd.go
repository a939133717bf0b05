package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/config"
)

// replay writes the event log to stdout as NDJSON envelopes, in commit order.
func (m *Main) replay(ctx context.Context, cfg config.Config, logger *slog.Logger, args []string) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	orgFlag := fs.String("organization", "", `one organization's events (its id, or "none" for events of no organization); default: all`)
	stream := fs.String("stream", "", "one stream's events (its id)")
	types := fs.String("type", "", "event types, comma-separated")
	from := fs.String("from", "", "events that occurred at or after this RFC 3339 time")
	to := fs.String("to", "", "events that occurred before this RFC 3339 time")
	after := fs.Int64("after", 0, "resume after the event at this position")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var f eventstore.HistoryFilter
	switch *orgFlag {
	case "":
	case "none":
		f.NoOrganization = true
	default:
		id, err := uuid.Parse(*orgFlag)
		if err != nil {
			return fmt.Errorf("--organization: %w", err)
		}
		f.Organization = &id
	}
	if *stream != "" {
		id, err := uuid.Parse(*stream)
		if err != nil {
			return fmt.Errorf("--stream: %w", err)
		}
		f.StreamID = &id
	}
	if *types != "" {
		for _, t := range strings.Split(*types, ",") {
			t = strings.TrimSpace(t)
			if _, ok := events.SchemaVersionOf(t); !ok {
				return fmt.Errorf("--type: %q is not an event type", t)
			}
			f.Types = append(f.Types, t)
		}
	}
	for _, tf := range []struct {
		flag string
		raw  string
		dst  **time.Time
	}{{"--from", *from, &f.From}, {"--to", *to, &f.To}} {
		if tf.raw == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, tf.raw)
		if err != nil {
			return fmt.Errorf("%s: %w", tf.flag, err)
		}
		*tf.dst = &t
	}
	pool, err := openPool(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer pool.Close()
	var cp eventstore.Checkpoint
	if *after > 0 {
		if cp, err = eventstore.ResumeAfter(ctx, pool, *after, nil); err != nil {
			return fmt.Errorf("--after: %w", err)
		}
	}
	w := bufio.NewWriterSize(m.Stdout, 1<<20)
	store, err := eventstore.Identity(ctx, pool)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(w)
	var n int64
	for {
		batch, next, err := eventstore.ReadHistory(ctx, pool, f, cp, 5000)
		if err != nil {
			return err
		}
		for _, e := range batch {
			e.StoreID = &store // as the relay publishes it
			if err := enc.Encode(e); err != nil {
				return err
			}
		}
		n += int64(len(batch))
		if len(batch) < 5000 {
			break
		}
		cp = next
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(m.Stderr, "replayed %d events\n", n)
	return nil
}
