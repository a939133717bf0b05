//go:build !linux

package broker

import (
	"errors"
	"net"
)

// setCork is not available off Linux: Cork does nothing there.
func setCork(net.Conn, bool) error { return errors.ErrUnsupported }

func corked(net.Conn) (bool, error) { return false, nil }
