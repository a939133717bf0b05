package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
	"github.com/chatbotsaas/chatbotd/projections"
)

// The whole binary sweeps: with the projectors in a process of their own, a user whose
// events the broker confirmed and then lost from the projectors' queue (purged while that
// process was down) becomes readable once it runs again, published again from the log by
// its sweep, and the status counts the events.
func TestServeSweepsWhatTheBrokerLost(t *testing.T) {
	a := startAppWith(t, []string{"serve", "--roles", "api,relay"}, "PROJECTOR_SWEEP_INTERVAL=200ms")
	projectors := func() func() { // a process that does not listen: serve's helper would wait for it
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		m := &Main{Stdout: io.Discard, Stderr: io.Discard, Environ: a.env}
		go func() { done <- m.Run(ctx, []string{"serve", "--roles", "projectors"}) }()
		stop := sync.OnceFunc(func() {
			cancel()
			assert.NoError(t, <-done)
		})
		t.Cleanup(stop)
		return stop
	}
	group := func() projections.Status {
		out, err := a.cli("", "projections", "status", "--json")
		require.NoError(t, err)
		var st Projections
		require.NoError(t, json.Unmarshal([]byte(out), &st))
		for _, p := range st.Projections {
			if p.Name == projections.GroupName {
				return p
			}
		}
		t.Fatalf("no %s line in %s", projections.GroupName, out)
		return projections.Status{}
	}

	stop := projectors()
	_, token := a.register("Swept", "Owner", "owner@swept.example")
	testenv.Eventually(t, 10*time.Second, func() error {
		if group().SweptAt == nil {
			return fmt.Errorf("the sweep has not finished a pass")
		}
		return nil
	})
	stop()

	lost, _ := a.createUser(token, "Lost", "lost@swept.example", "member", nil)
	ctx := context.Background()
	testenv.Eventually(t, 10*time.Second, func() error {
		st, err := eventstore.RelayLag(ctx, a.db.Pool, "")
		if err == nil && st.Behind > 0 {
			err = fmt.Errorf("%d events not published", st.Behind)
		}
		return err
	})
	conn, err := amqp091.Dial(a.mq.URL)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	purged, err := ch.QueuePurge(a.mq.QueuePrefix+projections.GroupName, false)
	require.NoError(t, err)
	require.Positive(t, purged, "the user's events waited in the projectors' queue")

	projectors()
	testenv.Eventually(t, 15*time.Second, func() error {
		if r := a.do(req{method: "GET", path: "/api/v1/users/" + lost.ID, token: token}); r.Status != 200 {
			return fmt.Errorf("the lost user reads %d", r.Status)
		}
		return nil
	})
	assert.Positive(t, group().EventsRedriven)
}
