package engine

import (
	"net"
	"time"

	"github.com/tlsrelay/tlsrelay/engine/errlog"
)

// Options are what the command line hands the engine besides the
// configuration.
type Options struct {
	// Log receives the error log. Nil: the engine opens the error_log of
	// the configuration (stderr when none is set).
	Log *errlog.Log
	// Quit, when closed, asks for a graceful stop (SIGQUIT): stop
	// accepting, wait for open sessions to end, at most QuitTimeout.
	Quit <-chan struct{}
	// QuitTimeout bounds the graceful stop when the configuration has no
	// worker_shutdown_timeout. Zero: no bound (sessions run to their end),
	// as NGINX without worker_shutdown_timeout.
	QuitTimeout time.Duration
	// Ready, if set, is called once with the bound listener addresses.
	Ready func(addrs []net.Addr)
	// Listen, if set, supplies the listening sockets (see ListenFunc).
	// Nil: each is bound as its listen directive says.
	Listen ListenFunc
	// Version names the build on the status page ("tlsrelay/0.1.0
	// (commit)"); "" shows "tlsrelay".
	Version string
}

// ListenFunc supplies one listening socket for a listen directive. create
// binds one as the directive says (backlog, reuseport, socket options); a
// ListenFunc may call it, or return a socket it already holds: one
// inherited across a binary upgrade, or one bound elsewhere (tests bind
// port 0). network is "tcp", with addr "ip:port" ("ip:port#i" for the i-th
// reuseport copy), or "unix", with addr the socket's bare path (as
// net.Listen takes it); a unix socket must be a *net.UnixListener. It runs
// on the goroutine that starts or reloads the engine.
type ListenFunc func(network, addr string, create func(network, addr string) (net.Listener, error)) (net.Listener, error)
