package dial

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// This file holds the upstream socket's options and how a connect applies
// them.

// SocketOptions are the upstream socket's options (proxy_bind,
// proxy_socket_keepalive, proxy_socket_rcvbuf/sndbuf, tcp_nodelay). The
// zero value is the system's defaults, keepalive off and Nagle on; the
// engine sets NoDelay from tcp_nodelay (on by default, as in NGINX).
type SocketOptions struct {
	KeepAlive      bool
	Rcvbuf, Sndbuf int
	NoDelay        bool
	// Bind is the source address; the zero Addr lets the system choose.
	Bind netip.Addr
	// Transparent binds to a non-local address (IP_TRANSPARENT; needs
	// CAP_NET_ADMIN).
	Transparent bool
}

// dialerFor returns a net.Dialer applying o to a socket of network
// ("tcp" or "unix"): a unix domain socket takes only the buffer sizes, the
// rest are TCP/IP's.
func dialerFor(o *SocketOptions, network string) *net.Dialer {
	d := &net.Dialer{KeepAlive: -1}
	if network == "unix" {
		o = &SocketOptions{Rcvbuf: o.Rcvbuf, Sndbuf: o.Sndbuf}
	}
	if o.KeepAlive {
		// SO_KEEPALIVE with the system's timers, as NGINX.
		d.KeepAliveConfig = net.KeepAliveConfig{Enable: true, Idle: -1, Interval: -1, Count: -1}
		d.KeepAlive = 0
	}
	if o.Bind.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: o.Bind.AsSlice()}
	}
	if o.Rcvbuf > 0 || o.Sndbuf > 0 || o.Transparent || o.Bind.IsValid() {
		opts := *o
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				if opts.Rcvbuf > 0 {
					serr = errors.Join(serr, syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, opts.Rcvbuf))
				}
				if opts.Sndbuf > 0 {
					serr = errors.Join(serr, syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, opts.Sndbuf))
				}
				if opts.Transparent {
					serr = errors.Join(serr, syscall.SetsockoptInt(int(fd), syscall.SOL_IP, syscall.IP_TRANSPARENT, 1))
				}
				if opts.Bind.IsValid() {
					// proxy_bind names the address only: let connect
					// choose the port (IP_BIND_ADDRESS_NO_PORT), as NGINX
					// and HAProxy do. A bind to port 0 otherwise takes
					// a port for the socket's life and its TIME_WAIT,
					// whatever the destination, so every port it holds
					// is refused to every other socket on the host; at
					// connect the port need only be unique for the
					// four-tuple. A kernel without the option (before
					// 4.2) binds as before: NGINX ignores the failure
					// too.
					syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
				}
			})
			if err != nil {
				return err
			}
			if serr != nil {
				return fmt.Errorf("setting upstream socket options: %w", serr)
			}
			return nil
		}
	}
	return d
}
