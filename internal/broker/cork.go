package broker

import (
	"net"
	"time"
)

// Cork holds the connection's writes back until the returned function is called, and
// then sends them together: a burst of publishes (the relay's batch, a message for each
// event and one for each frame) leaves in a few full segments instead of a write that
// crosses the network stack for every message. amqp091 flushes its buffer after each
// publish, and a flush on loopback wakes RabbitMQ for every message: in a profile of
// serve at 1,433 commands a second, the relay's publishes spent nearly half of their time
// in those writes, and a quarter of the relay's CPU went with the cork (BENCHMARKS.md,
// "twenty-first pass"). Where the socket cannot be corked (no connection yet,
// not Linux) it does nothing. Other users of the connection (acknowledgements,
// heartbeats) wait meanwhile for the burst's end, which comes at once: the kernel sends
// what it holds after 200 ms in any case. Calls may nest; the last to end uncorks.
func (c *Conn) Cork() (uncork func()) {
	c.corkMu.Lock()
	defer c.corkMu.Unlock()
	sock := c.sock
	if sock == nil {
		return func() {}
	}
	if c.corks == 0 && setCork(sock, true) != nil {
		return func() {}
	}
	c.corks++
	return func() {
		c.corkMu.Lock()
		defer c.corkMu.Unlock()
		if c.sock != sock {
			return // the connection was replaced; its socket is closed
		}
		c.corks--
		if c.corks == 0 {
			_ = setCork(sock, false)
		}
	}
}

// dialer dials a node as amqp.DefaultDial does (a deadline for the handshakes, which
// amqp091 clears once the connection is open), and keeps the socket for Cork.
func (c *Conn) dialer(timeout time.Duration) func(network, addr string) (net.Conn, error) {
	return func(network, addr string) (net.Conn, error) {
		conn, err := net.DialTimeout(network, addr, timeout)
		if err != nil {
			return nil, err
		}
		if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
			conn.Close()
			return nil, err
		}
		c.corkMu.Lock()
		c.sock, c.corks = conn, 0
		c.corkMu.Unlock()
		return conn, nil
	}
}
