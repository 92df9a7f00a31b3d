package metrics

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler returns the http.Handler of GET /metrics: a registry of its own
// (nothing global) with c and the Go runtime's and the process's
// collectors, in the Prometheus text format (or OpenMetrics/protobuf when a
// scraper asks). A scrape that fails to gather answers 500 with the error.
// It serves any number of concurrent scrapes.
func Handler(c *Collector) http.Handler {
	reg := prometheus.NewRegistry()
	// The three collectors' descriptors are fixed and distinct, so
	// registering them cannot fail.
	reg.MustRegister(c,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

// Server serves a metrics handler at /metrics (404 elsewhere) for
// `metrics_listen`. Its methods are safe from any goroutine.
type Server struct {
	srv *http.Server
}

// NewServer returns a Server for h, usually Handler's.
func NewServer(h http.Handler) *Server {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	return &Server{srv: &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}}
}

// Serve answers scrapes on ln until Close; it blocks, so run it on a
// goroutine of its own. It returns nil after Close and the accept error
// otherwise; ln is closed either way.
func (s *Server) Serve(ln net.Listener) error {
	err := s.srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("serving metrics on %s: %w", ln.Addr(), err)
}

// Close closes the listeners and the open connections at once (a scrape in
// progress is cut: the next one goes to whoever listens next).
func (s *Server) Close() error {
	if err := s.srv.Close(); err != nil {
		return fmt.Errorf("closing the metrics server: %w", err)
	}
	return nil
}
