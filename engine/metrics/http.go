package metrics

import (
	"net/http"

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
