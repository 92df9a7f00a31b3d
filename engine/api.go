package engine

import (
	"net"
	"time"
)

// Options are what the command line hands the engine besides the
// configuration.
type Options struct {
	// Log receives the error log. Nil: the engine opens the error_log of
	// the configuration (stderr when none is set).
	Log *ErrorLog
	// Quit, when closed, asks for a graceful stop (SIGQUIT): stop
	// accepting, wait for open sessions to end, at most QuitTimeout.
	Quit <-chan struct{}
	// QuitTimeout bounds the graceful stop. Zero: 60s.
	QuitTimeout time.Duration
	// Ready, if set, is called once with the bound listener addresses.
	Ready func(addrs []net.Addr)
}
