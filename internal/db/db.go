// Package db opens PostgreSQL pools, creates the database when it is missing, applies the
// embedded migrations, and classifies driver errors.
package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/migrations"
)

// Open returns a pool. It does not fail when the server is down: the pool connects
// lazily, so the process can start, answer 503 and recover.
func Open(ctx context.Context, url string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	cfg.MaxConns = maxConns
	cfg.MaxConnIdleTime = 5 * time.Minute
	cfg.HealthCheckPeriod = 15 * time.Second
	cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	cfg.AfterConnect = func(_ context.Context, conn *pgx.Conn) error {
		// uuid.UUID as pgx's own 16 bytes. Without it every uuid argument went through
		// its driver.Valuer (a string, parsed again), and an array of them failed the
		// binary plan first, building an error for each: half the CPU a projector batch
		// spent in Go. Arrays of strings and integers are written by RegisterArrays.
		RegisterUUID(conn.TypeMap())
		RegisterArrays(conn.TypeMap())
		return nil
	}
	return pgxpool.NewWithConfig(ctx, cfg)
}

// EnsureDatabase creates the database named in url when it does not exist, connecting to
// the server's "postgres" database to do it.
func EnsureDatabase(ctx context.Context, url string) error {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return fmt.Errorf("parse database url: %w", err)
	}
	name := cfg.Database
	cfg.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect to postgres: %w", err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return fmt.Errorf("look up database %q: %w", name, err)
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	if err != nil && !IsCode(err, "42P04") { // created by a concurrent starter
		return fmt.Errorf("create database %q: %w", name, err)
	}
	return nil
}

// Recreate drops the database name on the server at serverURL (closing its sessions) and
// creates it empty; it returns the new database's URL. For the measuring commands, which
// start from nothing.
func Recreate(ctx context.Context, serverURL, name string) (string, error) {
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return "", err
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", err
	}
	cfg := conn.Config()
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", cfg.User, cfg.Host, cfg.Port, name), nil
}

// Migrate applies every pending migration. Concurrent starters are serialised by goose's
// advisory-lock session locker.
func Migrate(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) error {
	p, sqlDB, err := provider(pool)
	if err != nil {
		return err
	}
	defer sqlDB.Close()
	results, err := p.Up(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	for _, r := range results {
		logger.Info("migration applied", "version", r.Source.Version, "file", r.Source.Path, "duration", r.Duration)
	}
	return nil
}

// Pending reports whether migrations remain to be applied (for /ready).
func Pending(ctx context.Context, pool *pgxpool.Pool) (bool, error) {
	p, sqlDB, err := provider(pool)
	if err != nil {
		return false, err
	}
	defer sqlDB.Close()
	return p.HasPending(ctx)
}

func provider(pool *pgxpool.Pool) (*goose.Provider, *sql.DB, error) {
	sqlDB := stdlib.OpenDBFromPool(pool)
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return nil, nil, err
	}
	sub, err := fs.Sub(migrations.FS, ".")
	if err != nil {
		return nil, nil, err
	}
	p, err := goose.NewProvider(goose.DialectPostgres, sqlDB, sub, goose.WithSessionLocker(locker))
	if err != nil {
		sqlDB.Close()
		return nil, nil, fmt.Errorf("migrations: %w", err)
	}
	return p, sqlDB, nil
}

// IsCode reports whether err is a PostgreSQL error with the given SQLSTATE.
func IsCode(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == code
}

// IsUniqueViolation reports whether err is a unique violation of the named constraint.
func IsUniqueViolation(err error, constraint string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == constraint
}

// IsUnavailable reports whether err means the database could not be reached or went
// away, as opposed to a query that failed on a healthy server.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	if apperr.CodeOf(err) == apperr.CodeUnavailable { // classified already
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// Class 08: connection exception; 57P01..57P03: admin shutdown, crash shutdown,
		// cannot connect now; 53300: too many connections.
		return strings.HasPrefix(pgErr.Code, "08") || pgErr.Code == "57P01" || pgErr.Code == "57P02" ||
			pgErr.Code == "57P03" || pgErr.Code == "53300"
	}
	var netErr net.Error
	var connectErr *pgconn.ConnectError
	// A connection cut mid-conversation surfaces as a bare (unexpected) EOF.
	return errors.As(err, &connectErr) || errors.As(err, &netErr) || pgconn.SafeToRetry(err) ||
		pgconn.Timeout(err) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		strings.Contains(err.Error(), "conn closed")
}

// Classify turns driver errors into the application's error: an unreachable server is
// SERVICE_UNAVAILABLE; anything else stays as it is (an internal error).
func Classify(err error) error {
	if err == nil || apperr.CodeOf(err) != "" {
		return err
	}
	if IsUnavailable(err) {
		return apperr.Wrap(apperr.CodeUnavailable, "the database is unavailable", err)
	}
	// Text PostgreSQL refuses (NUL, invalid UTF-8) came from a request that the decoders
	// should have refused already (httpx.Storable, httpx.PlainText): still the client's
	// input, so never a 500.
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "22021" || pgErr.Code == "22P05") {
		return apperr.Wrap(apperr.CodeBadRequest, "The request holds text that cannot be stored", err)
	}
	return err
}
