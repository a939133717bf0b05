package projections

import (
	"context"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/events"
)

// SetApplier is implemented by projectors that apply many events with one statement
// where Apply takes one each: the rows of a batch's new users, audit entries or messages
// inserted from arrays. A statement per event costs PostgreSQL a parse, a plan and an
// executor start per row, and that, not the rows, was most of a projector's time
// (0.24× of a batched upsert).
//
// ApplySet is given the events the runtime decided to apply, in the order it would have
// called Apply for each (gaps filled, duplicates left out), and must leave the tables
// exactly as those calls would. applyRuns is the usual way to keep that promise. The
// runtime then calls no Apply itself: a type that embeds a projector to change its Apply
// must give itself an ApplySet too.
type SetApplier interface {
	ApplySet(ctx context.Context, tx pgx.Tx, envs []events.Envelope) error
}

// applyRuns applies envs in order. An event that take accepts is held; the held events
// are written together by flush before any event take refuses (which apply applies alone)
// and at the end. So a held row is written before every later event that could read or
// change it, and the tables end as Apply one event at a time leaves them, provided the
// held events do not depend on each other's writes (each is a new row, or a change that
// commutes: a counter added to).
func applyRuns(envs []events.Envelope, take func(events.Envelope) (bool, error), flush func() error,
	apply func(events.Envelope) error) error {
	for _, e := range envs {
		took, err := take(e)
		if err != nil {
			return err
		}
		if took {
			continue
		}
		if err := flush(); err != nil {
			return err
		}
		if err := apply(e); err != nil {
			return err
		}
	}
	return flush()
}

// decodeAs decodes e when it is an event of type T; ok is false for any other type, which
// is not decoded.
func decodeAs[T events.Event](e events.Envelope) (ev T, ok bool, err error) {
	if e.Type != ev.EventType() {
		return ev, false, nil
	}
	d, err := e.Decode()
	if err != nil {
		return ev, false, err
	}
	ev, ok = d.(T)
	return ev, ok, nil
}

type replayKey struct{}

// withReplay marks ctx as a rebuild's replay (see replaying).
func withReplay(ctx context.Context) context.Context {
	return context.WithValue(ctx, replayKey{}, true)
}

// replaying tells a SetApplier that it writes a rebuild's fresh tables, which nothing but
// the rebuild writes and which get each event once: it may load rows with COPY (which
// has no ON CONFLICT), PostgreSQL's fastest way in.
func replaying(ctx context.Context) bool { return ctx.Value(replayKey{}) != nil }

// textArray writes ss as a PostgreSQL array literal, for a text[] column filled from
// one text element per row of a set's insert (u.x::text[]): PostgreSQL parses it in
// about a tenth of what unpacking a JSON array by a subquery per row cost, 1.4 µs a row
// (BENCHMARKS.md). Every element is quoted, so that no value (empty, NULL, braces,
// commas, spaces) is read as anything but itself; inside the quotes only the backslash
// and the double quote are escaped.
func textArray(ss []string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, s := range ss {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		for j := 0; j < len(s); j++ {
			if s[j] == '"' || s[j] == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(s[j])
		}
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}
