package engine

import (
	"iter"
	"net"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/engine/metrics"
	"github.com/tlsrelay/tlsrelay/pool"
	"github.com/tlsrelay/tlsrelay/tlsbridge"
)

// metricsEndpoint is the metrics_listen server: its address as written
// and the server on it.
type metricsEndpoint struct {
	addr string
	srv  *metrics.Server
}

// collector is the Prometheus collector of the engine: its counters, the
// peers of the configuration new sessions use, the dialer and the session
// store. It reads atomics only.
func (e *Engine) collector() *metrics.Collector {
	return metrics.NewCollector(metrics.Sources{
		Engine: e.m,
		Peers: func(yield func(string, *pool.Peer) bool) {
			for name, g := range e.plan.Load().groups {
				for _, p := range g.Peers() {
					if !yield(name, p) {
						return
					}
				}
			}
		},
		Groups: func(yield func(*pool.Group) bool) {
			for _, g := range e.plan.Load().groups {
				if !yield(g) {
					return
				}
			}
		},
		Dialer: func() *pool.Dialer { return e.dialer },
		Prewarmed: func() int {
			n := 0
			for _, s := range e.plan.Load().servers {
				if s.warm != nil {
					n += s.warm.Total()
				}
			}
			return n
		},
		Stores: iter.Seq[*tlsbridge.SessionStore](func(yield func(*tlsbridge.SessionStore) bool) {
			yield(e.plan.Load().store)
		}),
	})
}

// listenMetrics binds metrics_listen of cfg (through Options.Listen, so a
// binary upgrade hands the socket on) and serves /metrics on it; nil when
// the directive is absent. Runs on the starting or reloading goroutine.
func (e *Engine) listenMetrics(cfg *conf.Config) (*metricsEndpoint, error) {
	addr := cfg.Main.MetricsListen
	if addr == "" {
		return nil, nil
	}
	// The configuration refuses a metrics_listen equal to a stream
	// listen address, so the address alone names the socket.
	l := conf.Listen{Pos: cfg.Main.MetricsListenPos, Addr: addr, Network: "tcp", Backlog: 511}
	create := func(network, a string) (net.Listener, error) { return createListener(network, a, l) }
	var ln net.Listener
	var err error
	if e.opts.Listen != nil {
		ln, err = e.opts.Listen("tcp", addr, create)
	} else {
		ln, err = create("tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	ep := &metricsEndpoint{addr: addr, srv: metrics.NewServer(metrics.Handler(e.collector()))}
	e.metricsAddr.Store(ln.Addr().String())
	go func() {
		if err := ep.srv.Serve(ln); err != nil {
			e.log.Logf(LevelError, 0, "%v", err)
		}
	}()
	return ep, nil
}

// MetricsAddr returns the address the metrics endpoint listens on, "" if
// none; valid once Serve has called Options.Ready.
func (e *Engine) MetricsAddr() string {
	s, _ := e.metricsAddr.Load().(string)
	return s
}

// Metrics returns the engine's counters, which live as long as the
// process: a reload does not reset them.
func (e *Engine) Metrics() *metrics.Engine { return e.m }
