package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
)

// workers are serve's background loops (relay, projectors, listeners, outbox workers).
// They run under their own context, which ends only when stop is called: they outlive
// the HTTP server's drain, so that a command answered during shutdown is still relayed
// and projected. The first error any of them returns is on failed; later ones are
// logged, never blocking the worker that returns them.
type workers struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// ready, when set, holds every worker back until it is closed (the broker's topology
	// is declared); a worker that is stopped before never runs.
	ready  <-chan struct{}
	failed chan error
	logger *slog.Logger
}

func newWorkers(parent context.Context, logger *slog.Logger) *workers {
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	return &workers{ctx: ctx, cancel: cancel, failed: make(chan error, 1), logger: logger}
}

// start runs run in a goroutine of its own.
func (w *workers) start(name string, run func(context.Context) error) {
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		if w.ready != nil {
			select {
			case <-w.ready:
			case <-w.ctx.Done():
				return
			}
		}
		if err := run(w.ctx); err != nil {
			err = fmt.Errorf("%s: %w", name, err)
			select {
			case w.failed <- err:
			default:
				w.logger.Error("worker failed", "error", err)
			}
		}
	}()
}

// stop ends every worker and waits for them: after it, none touches the connections.
// It may be called more than once.
func (w *workers) stop() {
	w.cancel()
	w.wg.Wait()
}
