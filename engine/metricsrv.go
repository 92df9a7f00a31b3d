package engine

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"iter"
	stdlog "log"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/engine/errlog"
	"github.com/tlsrelay/tlsrelay/engine/listen"
	"github.com/tlsrelay/tlsrelay/engine/metrics"
	"github.com/tlsrelay/tlsrelay/pool"
	"github.com/tlsrelay/tlsrelay/pool/dial"
	"github.com/tlsrelay/tlsrelay/tlsbridge"
)

// metricsEndpoint is the metrics_listen server: its address as written
// and the server on it.
type metricsEndpoint struct {
	addr string
	srv  *metricsServer
}

// Bounds of the metrics server. A scrape is one small GET answered in
// milliseconds; Prometheus keeps one connection per target alive between
// scrapes (15-60 s apart). Without them, 1,100 clients that connect and
// send nothing held 1,100 descriptors for ReadHeaderTimeout each and
// starved the data path of descriptors (issue 18).
const (
	// metricsMaxConns is how many connections the server holds at once;
	// more wait in the listen backlog, unaccepted (no descriptor, nothing
	// read), as with golang.org/x/net/netutil.LimitListener.
	metricsMaxConns = 32
	// metricsReadHeaderTimeout bounds the request line and headers,
	// metricsReadTimeout the whole request, metricsWriteTimeout the
	// answer (a gather of every collector), metricsIdleTimeout a
	// kept-alive connection between scrapes.
	metricsReadHeaderTimeout = 5 * time.Second
	metricsReadTimeout       = 10 * time.Second
	metricsWriteTimeout      = 30 * time.Second
	metricsIdleTimeout       = 90 * time.Second
	// metricsMaxHeaderBytes bounds a request's headers (a scrape sends
	// a few hundred bytes).
	metricsMaxHeaderBytes = 16 << 10
)

// metricsServer serves GET /metrics, /healthz and /readyz, and the
// runtime API under /api/ (404 elsewhere) within the bounds above, and writes what net/http would print on standard error (accept
// errors, panics) to the engine's error log. Its methods are safe from any
// goroutine.
type metricsServer struct {
	srv *http.Server
	// full, when set (tests), is called each time the server has to wait
	// for a connection to close before it accepts another.
	full func()
}

// newMetricsServer returns the server of h, logging through log; ready
// answers /readyz, api (if not nil) /api/ (runtimeapi.go); pages are more
// handlers by mux pattern (the status page, status.go).
func newMetricsServer(h http.Handler, log *errlog.Log, ready func() (bool, string), api http.HandlerFunc, pages map[string]http.HandlerFunc) *metricsServer {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	if api != nil {
		mux.HandleFunc("/api/", api)
		mux.HandleFunc("/api", api)
	}
	for path, h := range pages {
		mux.HandleFunc(path, h)
	}
	// Kubernetes' probes: liveness (the process answers) and readiness
	// (serving new sessions). Plain text, no cache.
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		ok, why := ready()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		io.WriteString(w, why+"\n")
	})
	return &metricsServer{srv: &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: metricsReadHeaderTimeout,
		ReadTimeout:       metricsReadTimeout,
		WriteTimeout:      metricsWriteTimeout,
		IdleTimeout:       metricsIdleTimeout,
		MaxHeaderBytes:    metricsMaxHeaderBytes,
		ErrorLog:          stdlog.New(errorLogWriter{log}, "", 0),
	}}
}

// Serve answers scrapes on ln, at most metricsMaxConns connections at a
// time, until Close; it blocks. It returns nil after Close and the accept
// error otherwise; ln is closed either way.
func (s *metricsServer) Serve(ln net.Listener) error {
	ll := newLimitListener(ln, metricsMaxConns)
	ll.full = s.full
	err := s.srv.Serve(ll)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("serving metrics on %s: %w", ln.Addr(), err)
}

// Close closes the listener and the open connections at once (a scrape in
// progress is cut).
func (s *metricsServer) Close() error {
	if err := s.srv.Close(); err != nil {
		return fmt.Errorf("closing the metrics server: %w", err)
	}
	return nil
}

// errorLogWriter is the io.Writer under the metrics server's log.Logger:
// each line net/http logs becomes an [error] line of the error log.
type errorLogWriter struct{ log *errlog.Log }

func (w errorLogWriter) Write(p []byte) (int, error) {
	w.log.Logf(errlog.LevelError, 0, "metrics_listen: %s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}

// limitListener accepts at most n connections at a time: Accept waits for
// one of them to close before it takes another from the kernel (the
// semantics of golang.org/x/net/netutil.LimitListener, which this module
// does not otherwise need).
type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	// full, when set (tests), is called each time Accept has to wait
	// for a slot.
	full func()
}

func newLimitListener(ln net.Listener, n int) *limitListener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, n), done: make(chan struct{})}
}

// Accept waits for a free slot, then for a connection.
func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	default:
		if l.full != nil {
			l.full()
		}
		select {
		case l.sem <- struct{}{}:
		case <-l.done:
			return nil, net.ErrClosed
		}
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

// Close closes the listener and wakes an Accept waiting for a slot.
func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// limitConn gives its slot back when closed (once).
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
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
		Dialer:      func() *dial.Dialer { return e.dialer },
		NameLookups: e.names,
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
	create := func(network, a string) (net.Listener, error) { return listen.Create(network, a, l) }
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
	ep := &metricsEndpoint{addr: addr, srv: newMetricsServer(metrics.Handler(e.collector()), e.log, e.readiness, e.serveAPI,
		map[string]http.HandlerFunc{"GET /{$}": e.serveStatusPage, "GET /status.json": e.serveStatusJSON})}
	e.metricsAddr.Store(ln.Addr().String())
	go func() {
		if err := ep.srv.Serve(ln); err != nil {
			e.log.Logf(errlog.LevelError, 0, "%v", err)
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

// readiness is /readyz's answer: ready once every listener accepts, until
// a graceful quit (-s quit, SIGQUIT, a binary upgrade) closes them, when
// the open sessions drain. Safe from any goroutine.
func (e *Engine) readiness() (bool, string) {
	select {
	case <-e.stopped:
		return false, "stopped"
	default:
	}
	if e.quitting.Load() {
		return false, fmt.Sprintf("draining: the listeners are closed, %d sessions still open", e.m.Active())
	}
	select {
	case <-e.booted:
		return true, "ready"
	default:
		return false, "starting: the listeners do not accept yet"
	}
}
