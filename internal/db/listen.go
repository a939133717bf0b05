package db

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// listenIdleCheck is how long a LISTEN connection may stay quiet before it is pinged:
// one that died silently must not leave its listener trusted.
const listenIdleCheck = 10 * time.Second

// KeepListening listens on channel until ctx ends, on a connection of its own opened with
// config (outside any pool: LISTEN is session state), and calls notify with each
// notification's payload. live(true) says it listens; live(false) that it stopped (the
// connection failed, or ctx ended), after which nothing it was keeping fresh may be
// trusted. A failure is given to failed, and it listens again a second later.
func KeepListening(ctx context.Context, config *pgx.ConnConfig, channel string, live func(bool), notify func(payload string), failed func(error)) {
	for ctx.Err() == nil {
		err := listen(ctx, config, channel, func() { live(true) }, notify)
		live(false)
		if ctx.Err() != nil {
			return
		}
		failed(err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// listen is one LISTEN connection: until ctx ends (nil) or the connection fails.
func listen(ctx context.Context, config *pgx.ConnConfig, channel string, listening func(), notify func(payload string)) error {
	conn, err := pgx.ConnectConfig(ctx, config.Copy())
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		return err
	}
	listening()
	for {
		wctx, cancel := context.WithTimeout(ctx, listenIdleCheck)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if !pgconn.Timeout(err) {
				return err
			}
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err = conn.Ping(pctx) // notifications that arrive meanwhile are kept for the next wait
			cancel()
			if err != nil {
				return err
			}
			continue
		}
		notify(n.Payload)
	}
}
