package engine

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/tlsrelay/tlsrelay/engine/conf"
)

// errNotYet is returned until the data path lands.
var errNotYet = errors.New("engine: not implemented yet")

// Options are what the command line hands the engine besides the
// configuration.
type Options struct {
	// Log receives the error log. Nil: the engine opens the error_log of
	// the configuration (stderr when none is set).
	Log *slog.Logger
	// Quit, when closed, asks for a graceful stop (SIGQUIT): stop
	// accepting, wait for open sessions to end, at most QuitTimeout.
	Quit <-chan struct{}
	// QuitTimeout bounds the graceful stop. Zero: 60s.
	QuitTimeout time.Duration
	// Ready, if set, is called once with the bound listener addresses.
	Ready func(addrs []net.Addr)
}

// Check builds everything a configuration describes (TLS policies,
// certificates, upstream groups) without binding a port or starting a loop,
// as `tlsrelay -t` needs. It returns the warnings to print for legal but
// insecure settings.
func Check(cfg *conf.Config) (warnings []string, err error) {
	return nil, nil
}

// Run serves cfg until ctx is done (stop at once: SIGTERM, SIGINT) or Quit
// is closed and the sessions have ended; it is the body of `tlsrelay`
// without -t.
func Run(ctx context.Context, cfg *conf.Config, opts Options) error {
	return errNotYet
}
