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

// Statements records every SQL statement a pool runs, alone or in a batch, in order
// (MustTracedPool).
type Statements struct {
	mu      sync.Mutex
	sql     []string
	batched []string // those sent in a batch
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
	s.sql = append(s.sql, data.SQL)
	s.mu.Unlock()
	return ctx
}

func (s *Statements) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (s *Statements) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}

func (s *Statements) TraceBatchQuery(_ context.Context, _ *pgx.Conn, data pgx.TraceBatchQueryData) {
	s.mu.Lock()
	s.sql, s.batched = append(s.sql, data.SQL), append(s.batched, data.SQL)
	s.mu.Unlock()
}

func (s *Statements) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// All are the statements recorded so far.
func (s *Statements) All() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.sql)
}

// Reset forgets what was recorded.
func (s *Statements) Reset() {
	s.mu.Lock()
	s.sql, s.batched = nil, nil
	s.mu.Unlock()
}

// Matching are the statements matching re.
func (s *Statements) Matching(re *regexp.Regexp) []string { return s.match(re, s.sql) }

// BatchedMatching are the statements matching re that were sent in a batch.
func (s *Statements) BatchedMatching(re *regexp.Regexp) []string { return s.match(re, s.batched) }

// FirstMatching is the index, among every statement recorded, of the first one matching
// re (-1: none).
func (s *Statements) FirstMatching(re *regexp.Regexp) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.IndexFunc(s.sql, re.MatchString)
}

func (s *Statements) match(re *regexp.Regexp, sql []string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, q := range sql {
		if re.MatchString(q) {
			out = append(out, q)
		}
	}
	return out
}
