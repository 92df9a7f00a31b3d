package dial

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/syserr"
)

// This file holds the dialer's errors: the values callers match with
// errors.Is, and the types that give an attempt's failure NGINX's words.

// ErrQueueFull is returned when a Dialer with a bound (Config.MaxWorkers)
// has more sessions waiting for a worker than its queue holds.
var ErrQueueFull = errors.New("dial: queue full")

// ErrHandshakeTimeout is the error of a TLS handshake that did not finish
// within proxy_connect_timeout (or a probe's health_check_timeout). NGINX
// logs nothing specific for it (known problem #12 of the reference); we
// name it.
var ErrHandshakeTimeout = errors.New("TLS handshake timed out")

// ErrConnectTimeout is the error of a TCP connect that did not finish within
// proxy_connect_timeout (or a probe's health_check_timeout).
var ErrConnectTimeout = errors.New("upstream timed out (110: Connection timed out)")

// ErrNoSocket is wrapped by the error of an attempt that could not even
// create its socket for want of a local resource (EMFILE, ENFILE, ENOBUFS,
// ENOMEM): the process, not the peer, is at fault. Such an attempt ends the
// walk without charging the peer, as NGINX's NGX_ERROR from
// ngx_event_connect_peer ("socket() failed (24: Too many open files)",
// logged at alert, the session finalized with 500, no next upstream).
var ErrNoSocket = errors.New("no local resources for an upstream socket")

// handshakeTimeoutError is an attempt's error when the handshake did not
// finish within proxy_connect_timeout (or what was left of a probe's
// deadline). It reads "TLS handshake timed out after 500ms" and matches
// both ErrHandshakeTimeout and the deadline error underneath, so that
// tlsbridge.Classify names it a timeout.
type handshakeTimeoutError struct {
	after time.Duration
	err   error
}

// Error returns "TLS handshake timed out after" and the time it had.
func (e *handshakeTimeoutError) Error() string {
	return fmt.Sprintf("%v after %v", ErrHandshakeTimeout, e.after)
}

// Unwrap returns ErrHandshakeTimeout and the deadline error.
func (e *handshakeTimeoutError) Unwrap() []error { return []error{ErrHandshakeTimeout, e.err} }

// noSocketError is an attempt's error when socket() failed for want of a
// local resource. It reads as NGINX's line ("socket() failed (24: Too many
// open files)") and matches ErrNoSocket, the errno and the dial error.
type noSocketError struct {
	errno syscall.Errno
	err   error
}

// Error returns NGINX's line, "socket() failed (24: Too many open files)".
func (e *noSocketError) Error() string {
	return fmt.Sprintf("socket() failed (%s)", syserr.Paren(e.errno))
}

// Unwrap returns ErrNoSocket and the dial error.
func (e *noSocketError) Unwrap() []error { return []error{ErrNoSocket, e.err} }

// noSocket reports whether a dial failed in socket() (or in bind() for
// proxy_bind) for want of a local resource, and the errno.
func noSocket(err error) (syscall.Errno, bool) {
	var se *os.SyscallError
	if !errors.As(err, &se) || (se.Syscall != "socket" && se.Syscall != "bind") {
		return 0, false
	}
	var errno syscall.Errno
	if !errors.As(se.Err, &errno) {
		return 0, false
	}
	switch errno {
	case syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM:
		return errno, true
	}
	return 0, false
}

// isTimeout reports whether err is a net.Error that timed out.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
