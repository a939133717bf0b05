package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/internal/testenv"
	"github.com/chatbotsaas/chatbotd/projections"
)

// Two deployments (two event stores) on one broker. With the same queue names the
// second refuses to start and says what to set; with queues of its own on the same
// exchange, each applies only its own store's events, and neither loses any.
func TestDeploymentsSharingABrokerCannotSteal(t *testing.T) {
	a := startApp(t)
	var health struct {
		StoreID string `json:"store_id"`
	}
	a.expect(req{method: "GET", path: "/health"}, 200).data(t, &health)
	assert.NotEmpty(t, health.StoreID, "/health names the store")

	// The same names, another store: refused, saying what to set.
	other := testenv.MustDatabase(t)
	env := append([]string{}, a.env...)
	env = append(env, "DATABASE_URL="+other.URL, "HTTP_ADDR=127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := (&Main{Stdout: &syncWriter{}, Stderr: &syncWriter{}, Environ: env}).Run(ctx, []string{"serve"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "AMQP_QUEUE_PREFIX")
	assert.Contains(t, err.Error(), health.StoreID)

	// Queues of its own on the same exchange: both serve, each its own events.
	b := startApp(t, "AMQP_EXCHANGE="+a.mq.Exchange)
	for i := range 5 {
		for _, d := range []*app{a, b} {
			email := fmt.Sprintf("owner%d-%s@example.com", i, strings.TrimPrefix(d.base, "http://127.0.0.1:"))
			res := d.expect(req{method: "POST", path: "/api/v1/auth/register", body: map[string]string{
				"organization_name": "Org", "name": "Owner", "email": email, "password": "correct horse"}}, 201)
			token := d.login(email, "correct horse").AccessToken
			d.expect(req{method: "GET", path: "/api/v1/users", token: token, headers: consistent(res)}, 200)
		}
	}
	count := func(d *app) int {
		var n int
		require.NoError(t, d.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM users`).Scan(&n))
		return n
	}
	testenv.Eventually(t, 15*time.Second, func() error {
		for _, d := range []*app{a, b} {
			if n := count(d); n != 5 {
				return fmt.Errorf("%s has %d users, want its own 5", d.base, n)
			}
		}
		return nil
	})
	conn, err := amqp091.Dial(a.mq.URL)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	for _, d := range []*app{a, b} {
		for _, name := range append(partNames(), projections.GroupName) {
			q, err := ch.QueueDeclarePassive(d.mq.QueuePrefix+name+".dead", true, false, false, false,
				amqp091.Table{"x-queue-type": "quorum"})
			require.NoError(t, err)
			assert.Zero(t, q.Messages, "nothing dead-lettered in %s", q.Name)
		}
	}
	metrics := string(b.expect(req{method: "GET", path: "/metrics"}, 200).Raw)
	assert.Contains(t, metrics, "chatbotd_consumer_foreign_events_total", "the other store's events were seen and skipped")
}

// AMQP_URL lists a cluster's nodes: when the node the process is connected to goes away
// (and stays away), the relay and every consumer carry on through another, and commands
// keep reaching the read models.
func TestRelayAndConsumersCarryOnThroughAnotherNode(t *testing.T) {
	nodes := []*testenv.Proxy{testenv.MustProxy(t, "127.0.0.1:5672"), testenv.MustProxy(t, "127.0.0.1:5672")}
	var urls []string
	for _, n := range nodes {
		urls = append(urls, strings.Replace(testenv.AMQPURL(), "127.0.0.1:5672", n.Addr(), 1))
	}
	a := startApp(t, "AMQP_URL="+strings.Join(urls, ","))
	_, token := a.register("Acme", "Ada", "ada@example.com")
	u, res := a.createUser(token, "Bob", "bob@example.com", "member", nil)
	a.expect(req{method: "GET", path: "/api/v1/users/" + u.ID, token: token, headers: consistent(res)}, 200)
	var used, spare *testenv.Proxy
	for i, n := range nodes {
		if n.Conns() > 0 {
			used, spare = n, nodes[1-i]
		}
	}
	require.NotNil(t, used, "connected through one of the nodes")
	assert.Zero(t, spare.Conns(), "one connection per process, on one node")
	used.Cut()
	for i := range 3 {
		u, res := a.createUser(token, "User", fmt.Sprintf("user%d@example.com", i), "member", nil)
		testenv.Eventually(t, 30*time.Second, func() error {
			if r := a.do(req{method: "GET", path: "/api/v1/users/" + u.ID, token: token, headers: consistent(res)}); r.Status != 200 {
				return fmt.Errorf("GET user: %d %s", r.Status, r.Raw)
			}
			return nil
		})
	}
	assert.Positive(t, spare.Conns(), "the relay and the consumers moved to the other node")
}
