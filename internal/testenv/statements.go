package testenv

import (
	"context"
	"regexp"
	"slices"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Statements records every SQL statement a pool runs, alone or in a batch, in order, and
// the round trips that carried them (MustTracedPool).
type Statements struct {
	mu      sync.Mutex
	sql     []string
	alone   []string          // those sent in a round trip of their own
	batches [][]string        // the batches' statements, a batch each
	open    map[*pgx.Conn]int // each connection's batch being sent, by index in batches
}

// MustTracedPool is a pool on url whose statements are recorded; it is closed with tb.
func MustTracedPool(tb testing.TB, url string) (*pgxpool.Pool, *Statements) {
	tb.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		tb.Fatal(err)
	}
	traced := &Statements{}
	cfg.ConnConfig.Tracer = traced
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	return pool, traced
}

func (s *Statements) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	s.mu.Lock()
	s.sql, s.alone = append(s.sql, data.SQL), append(s.alone, data.SQL)
	s.mu.Unlock()
	return ctx
}

func (s *Statements) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (s *Statements) TraceBatchStart(ctx context.Context, conn *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	s.mu.Lock()
	if s.open == nil {
		s.open = map[*pgx.Conn]int{}
	}
	s.open[conn] = len(s.batches)
	s.batches = append(s.batches, nil)
	s.mu.Unlock()
	return ctx
}

func (s *Statements) TraceBatchQuery(_ context.Context, conn *pgx.Conn, data pgx.TraceBatchQueryData) {
	s.mu.Lock()
	i := s.open[conn]
	s.sql, s.batches[i] = append(s.sql, data.SQL), append(s.batches[i], data.SQL)
	s.mu.Unlock()
}

func (s *Statements) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// All are the statements recorded so far.
func (s *Statements) All() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.sql)
}

// RoundTrips are the round trips recorded so far: each statement sent alone, and each
// batch's statements.
func (s *Statements) RoundTrips() (alone []string, batches [][]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	batches = make([][]string, len(s.batches))
	for i, b := range s.batches {
		batches[i] = slices.Clone(b)
	}
	return slices.Clone(s.alone), batches
}

// Reset forgets what was recorded.
func (s *Statements) Reset() {
	s.mu.Lock()
	s.sql, s.alone, s.batches, s.open = nil, nil, nil, nil
	s.mu.Unlock()
}

// Matching are the statements matching re.
func (s *Statements) Matching(re *regexp.Regexp) []string { return matching(re, s.All()) }

// BatchedMatching are the statements matching re that were sent in a batch.
func (s *Statements) BatchedMatching(re *regexp.Regexp) []string {
	_, batches := s.RoundTrips()
	return matching(re, slices.Concat(batches...))
}

// FirstMatching is the index, among every statement recorded, of the first one matching
// re (-1: none).
func (s *Statements) FirstMatching(re *regexp.Regexp) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.IndexFunc(s.sql, re.MatchString)
}

func matching(re *regexp.Regexp, sql []string) []string {
	var out []string
	for _, q := range sql {
		if re.MatchString(q) {
			out = append(out, q)
		}
	}
	return out
}
