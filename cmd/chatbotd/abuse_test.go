package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSlowHeaderWritersAreCutOff: a client that trickles its headers (slowloris) is
// disconnected at HTTP_READ_HEADER_TIMEOUT, and the server keeps answering others.
func TestSlowHeaderWritersAreCutOff(t *testing.T) {
	a := startApp(t, "HTTP_READ_HEADER_TIMEOUT=1s")
	addr := strings.TrimPrefix(a.base, "http://")
	var wg sync.WaitGroup
	cut := make([]time.Duration, 20)
	for i := range cut {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.Dial("tcp", addr)
			if !assert.NoError(t, err) {
				return
			}
			defer conn.Close()
			start := time.Now()
			_, _ = fmt.Fprint(conn, "GET /health HTTP/1.1\r\nHost: x\r\n")
			// One header byte every 200 ms: never finishing, always talking.
			for time.Since(start) < 10*time.Second {
				if _, err := conn.Write([]byte("X")); err != nil {
					break
				}
				_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				if _, err := conn.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
					break // closed by the server (or answered 408 and closed)
				}
			}
			cut[i] = time.Since(start)
		}()
	}
	// Meanwhile a normal client is served.
	time.Sleep(300 * time.Millisecond)
	res, err := a.client.Get(a.base + "/health")
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, 200, res.StatusCode)
	wg.Wait()
	for i, d := range cut {
		assert.Less(t, d, 4*time.Second, "slow client %d was held for %s", i, d)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestOversizedBodiesAre413WithoutReadingThem: a body over the limit is refused with 413
// in the envelope, whether it says its length up front or streams it chunked, and
// nothing is created.
func TestOversizedBodiesAre413WithoutReadingThem(t *testing.T) {
	a := startApp(t)
	_, token := a.register("Big Corp", "Owner", "owner@big.example")
	big := `{"name":"` + strings.Repeat("x", 2<<20) + `"}`
	for _, chunked := range []bool{false, true} {
		var body io.Reader = strings.NewReader(big)
		if chunked {
			body = io.MultiReader(strings.NewReader(big)) // no length known: sent chunked
		}
		hr, err := http.NewRequest("POST", a.base+"/api/v1/chatbots", body)
		require.NoError(t, err)
		hr.Header.Set("Content-Type", "application/json")
		hr.Header.Set("Authorization", "Bearer "+token)
		res, err := a.client.Do(hr)
		require.NoError(t, err)
		raw, _ := io.ReadAll(res.Body)
		res.Body.Close()
		assert.Equal(t, 413, res.StatusCode, "chunked %v", chunked)
		assert.Contains(t, string(raw), `"error_code":"PAYLOAD_TOO_LARGE"`, "chunked %v", chunked)
	}
	list := a.expect(req{method: "GET", path: "/api/v1/chatbots", token: token}, 200)
	assert.JSONEq(t, `[]`, string(list.Body.Data), "nothing was created")
}

// TestTwoThousandIdleConnectionsDoNotExhaustTheServer: 2,000 clients that connect and
// send nothing (or a request and then nothing more) leave the server answering others
// at once.
func TestTwoThousandIdleConnectionsDoNotExhaustTheServer(t *testing.T) {
	a := startApp(t)
	addr := strings.TrimPrefix(a.base, "http://")
	conns := make([]net.Conn, 0, 2000)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range 2000 {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err, "connection %d", i)
		if i%2 == 0 {
			// Half of them are keep-alive connections that made one request and idle.
			_, err = fmt.Fprint(c, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
			require.NoError(t, err)
			res, err := http.ReadResponse(bufio.NewReader(c), nil)
			require.NoError(t, err, "connection %d", i)
			res.Body.Close()
		}
		conns = append(conns, c)
	}
	for range 20 {
		start := time.Now()
		res, err := a.client.Get(a.base + "/health")
		require.NoError(t, err)
		res.Body.Close()
		assert.Equal(t, 200, res.StatusCode)
		assert.Less(t, time.Since(start), time.Second)
	}
	a.register("Busy", "Owner", "owner@busy.example") // commands are served too
}
