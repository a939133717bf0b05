package broker

import (
	"net"
	"syscall"
)

// setCork sets TCP_CORK on conn's socket.
func setCork(conn net.Conn, on bool) error {
	v := 0
	if on {
		v = 1
	}
	return onSocket(conn, func(fd int) error {
		return syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_CORK, v)
	})
}

// corked reads TCP_CORK on conn's socket (tests).
func corked(conn net.Conn) (bool, error) {
	var v int
	err := onSocket(conn, func(fd int) (err error) {
		v, err = syscall.GetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_CORK)
		return err
	})
	return v != 0, err
}

// onSocket runs f on the file descriptor of conn, a TCP connection.
func onSocket(conn net.Conn, f func(fd int) error) error {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return syscall.EINVAL
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := raw.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}
