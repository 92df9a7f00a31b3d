package engine

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
)

// scrape GETs /metrics from addr and returns the text.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("scrape: %d %v", resp.StatusCode, err)
	}
	return string(b)
}

// metricValue parses text and returns the value of the series name with
// the labels given as "k=v" pairs (all of them must match).
func metricValue(t *testing.T, text, name string, labels ...string) float64 {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parsing the scrape: %v", err)
	}
	f := fams[name]
	if f == nil {
		t.Fatalf("no series %s", name)
	}
next:
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, lp := range m.Label {
			have[lp.GetName()] = lp.GetValue()
		}
		for _, kv := range labels {
			k, v, _ := strings.Cut(kv, "=")
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

// TestMetricsEndpoint: metrics_listen serves the Prometheus text format;
// counters follow the traffic and are not reset by reloads; promtool
// accepts the output.
func TestMetricsEndpoint(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 2, backend.Echo, nil)
	text := strings.Replace(guideConf(ups, ""), "worker_processes 2;", "worker_processes 2;\nmetrics_listen 127.0.0.1:60;", 1)
	tb := startEngine(t, dir, text)
	maddr := tb.eng.MetricsAddr()
	if maddr == "" {
		t.Fatal("no metrics address")
	}
	for i := 0; i < 6; i++ {
		if _, err := echoOnce(tb.addr, []byte("count me"), 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "sessions ended", 10*time.Second, func() bool { return tb.eng.Metrics().Active() == 0 })
	before := scrape(t, maddr)
	if v := metricValue(t, before, "tlsrelay_sessions_accepted_total"); v != 6 {
		t.Errorf("sessions_accepted_total = %v, want 6", v)
	}
	var full, resumed float64
	for _, u := range ups {
		peer := "peer=" + u.Addr()
		full += metricValue(t, before, "tlsrelay_upstream_handshakes_total", "upstream=backend", peer, "outcome=full")
		resumed += metricValue(t, before, "tlsrelay_upstream_handshakes_total", "upstream=backend", peer, "outcome=resumed")
		if v := metricValue(t, before, "tlsrelay_upstream_peer_state", "upstream=backend", peer, "state=up"); v != 1 {
			t.Errorf("%s: state up = %v", u.Addr(), v)
		}
	}
	if full != 2 || resumed != 4 {
		t.Errorf("handshakes full %v resumed %v, want 2 and 4", full, resumed)
	}
	if v := metricValue(t, before, "tlsrelay_bytes_total", "direction=from_client"); v != 6*8 {
		t.Errorf("bytes from clients %v, want 48", v)
	}
	if v := metricValue(t, before, "tlsrelay_sessions_ended_total", "reason=client_closed"); v != 6 {
		t.Errorf("sessions ended by the client %v, want 6", v)
	}
	for i := 0; i < 3; i++ {
		if err := tb.reload(text); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := echoOnce(tb.addr, []byte("count me"), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "session ended", 10*time.Second, func() bool { return tb.eng.Metrics().Active() == 0 })
	after := scrape(t, maddr)
	if v := metricValue(t, after, "tlsrelay_sessions_accepted_total"); v != 7 {
		t.Errorf("after reloads sessions_accepted_total = %v, want 7 (not reset)", v)
	}
	if v := metricValue(t, after, "tlsrelay_reloads_total", "result=ok"); v != 3 {
		t.Errorf("reloads ok = %v, want 3", v)
	}
	var resumedAfter float64
	for _, u := range ups {
		resumedAfter += metricValue(t, after, "tlsrelay_upstream_handshakes_total", "upstream=backend", "peer="+u.Addr(), "outcome=resumed")
	}
	if resumedAfter != 5 {
		t.Errorf("resumed after reloads %v, want 5 (per-peer counters carried over)", resumedAfter)
	}
	if v := metricValue(t, after, "tlsrelay_session_tickets"); v < 2 {
		t.Errorf("session_tickets = %v, want at least 2", v)
	}
	promtoolCheck(t, after)
}

// promtoolCheck runs `promtool check metrics` on text; CI installs
// promtool, elsewhere the check is skipped when it is missing.
func promtoolCheck(t *testing.T, text string) {
	t.Helper()
	pt, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool is not installed (Debian's prometheus package)")
		}
		t.Log("promtool not installed: skipping promtool check metrics")
		return
	}
	cmd := exec.Command(pt, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	if s := strings.TrimSpace(string(out)); s != "" {
		fmt.Println(s)
	}
}
