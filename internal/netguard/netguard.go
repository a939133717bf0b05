// Package netguard keeps outgoing calls (webhook responders, webhooks) to public
// addresses: https only, and the IP actually dialled is checked at connect time, which
// also defeats DNS rebinding (a name that resolved to a public address at validation and
// to 127.0.0.1 at call time).
package netguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"syscall"
)

// Guard checks targets; AllowPrivate (development and tests only) lifts the address rule.
type Guard struct {
	AllowPrivate bool
	// Resolver looks names up; nil is the system resolver.
	Resolver *net.Resolver
}

// ErrForbiddenAddress is returned for a target in a refused range.
var ErrForbiddenAddress = errors.New("the address is not a public one")

// allowHint names the setting that lifts the rules, for whoever tries a local target.
const allowHint = "ALLOW_PRIVATE_TARGETS=true, for development only"

// errPrivateTarget is ErrForbiddenAddress as CheckURL answers it, with the hint.
var errPrivateTarget = fmt.Errorf("%w (private and loopback targets are accepted only where the server runs with %s)",
	ErrForbiddenAddress, allowHint)

// Public reports whether ip is a public unicast address: not loopback, private,
// link-local (which holds cloud metadata at 169.254.169.254), shared (CGNAT),
// unspecified, multicast or reserved.
func Public(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsMulticast() || ip.IsUnspecified() || ip.IsInterfaceLocalMulticast() {
		return false
	}
	for _, p := range refused {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

var refused = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"), // shared address space (CGNAT)
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"), // benchmarking
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("64:ff9b::/96"), // NAT64 can reach private IPv4
	netip.MustParsePrefix("fc00::/7"),
}

// CheckURL validates a target URL: https (http too when private targets are allowed),
// a host, no credentials, and every address it resolves to public.
func (g Guard) CheckURL(ctx context.Context, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return errors.New("must be an absolute URL")
	}
	if u.Scheme != "https" && !(g.AllowPrivate && u.Scheme == "http") {
		return errors.New("must use https (plain http is accepted only where the server runs with " + allowHint + ")")
	}
	if u.User != nil {
		return errors.New("must not carry credentials")
	}
	if g.AllowPrivate {
		return nil
	}
	host := u.Hostname()
	if ip, err := netip.ParseAddr(host); err == nil {
		if !Public(ip) {
			return errPrivateTarget
		}
		return nil
	}
	r := g.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	addrs, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil || len(addrs) == 0 {
		return fmt.Errorf("host %q does not resolve", host)
	}
	for _, a := range addrs {
		if !Public(a) {
			return errPrivateTarget
		}
	}
	return nil
}

// Control is a net.Dialer Control function that refuses non-public addresses at
// connect time.
func (g Guard) Control(network, address string, _ syscall.RawConn) error {
	if g.AllowPrivate {
		return nil
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return err
	}
	if !Public(ap.Addr()) {
		return fmt.Errorf("dial %s: %w", address, ErrForbiddenAddress)
	}
	return nil
}
