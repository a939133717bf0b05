package broker

import (
	"net"
	"syscall"
)

// setCork sets TCP_CORK on conn's socket.
func setCork(conn net.Conn, on bool) error {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return syscall.EINVAL
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return err
	}
	v := 0
	if on {
		v = 1
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK, v)
	}); err != nil {
		return err
	}
	return serr
}

// corked reads TCP_CORK on conn's socket (tests).
func corked(conn net.Conn) (bool, error) {
	raw, err := conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		return false, err
	}
	var v int
	var serr error
	if err := raw.Control(func(fd uintptr) {
		v, serr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK)
	}); err != nil {
		return false, err
	}
	return v != 0, serr
}
