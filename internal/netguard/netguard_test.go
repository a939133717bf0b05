package netguard

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestPublic(t *testing.T) {
	for _, ip := range []string{"127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "::1", "fe80::1",
		"fc00::1", "100.64.0.1", "0.0.0.0", "::ffff:127.0.0.1", "224.0.0.1"} {
		assert.False(t, Public(netip.MustParseAddr(ip)), ip)
	}
	for _, ip := range []string{"93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"} {
		assert.True(t, Public(netip.MustParseAddr(ip)), ip)
	}
}

func TestCheckURL(t *testing.T) {
	g := Guard{}
	ctx := context.Background()
	for _, u := range []string{"https://127.0.0.1/hook", "https://10.0.0.1/x", "https://169.254.169.254/latest/meta-data",
		"https://[::1]/x", "https://localhost/x"} {
		assert.Error(t, g.CheckURL(ctx, u), u)
	}
	assert.ErrorIs(t, g.CheckURL(ctx, "https://127.0.0.1/hook"), ErrForbiddenAddress)
	// Whoever tries a local target learns what lifts the rule, and that it is for development.
	assert.ErrorContains(t, g.CheckURL(ctx, "https://10.0.0.1/x"), "ALLOW_PRIVATE_TARGETS=true, for development only")
	assert.ErrorContains(t, g.CheckURL(ctx, "http://93.184.216.34/x"), "ALLOW_PRIVATE_TARGETS=true, for development only")
	for _, u := range []string{"http://93.184.216.34/x", "ftp://x", "https://user:pw@93.184.216.34/", "not a url", "/relative"} {
		assert.Error(t, g.CheckURL(ctx, u), u)
	}
	assert.NoError(t, g.CheckURL(ctx, "https://93.184.216.34/hook"))
	assert.NoError(t, Guard{AllowPrivate: true}.CheckURL(ctx, "http://127.0.0.1:8080/hook"))
}

func TestDialRefusedAtConnectTime(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := net.Dialer{Control: Guard{}.Control}
	_, err = d.Dial("tcp", ln.Addr().String())
	assert.True(t, errors.Is(err, ErrForbiddenAddress), "%v", err)
	d = net.Dialer{Control: Guard{AllowPrivate: true}.Control}
	c, err := d.Dial("tcp", ln.Addr().String())
	if assert.NoError(t, err) {
		c.Close()
	}
}
