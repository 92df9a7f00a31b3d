package engine

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tlsrelay/tlsrelay/engine/errlog"
	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
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
	testutil.WaitFor(t, "sessions ended", 10*time.Second, func() bool { return tb.eng.Metrics().Active() == 0 })
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
	testutil.WaitFor(t, "session ended", 10*time.Second, func() bool { return tb.eng.Metrics().Active() == 0 })
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

// temporaryErr is an accept error net/http retries after logging it.
type temporaryErr struct{}

func (temporaryErr) Error() string   { return "accept: injected temporary error" }
func (temporaryErr) Timeout() bool   { return true }
func (temporaryErr) Temporary() bool { return true }

// failOnce is a listener whose first Accept fails with temporaryErr.
type failOnce struct {
	net.Listener
	once sync.Once
}

func (l *failOnce) Accept() (net.Conn, error) {
	var err error
	l.once.Do(func() { err = temporaryErr{} })
	if err != nil {
		return nil, err
	}
	return l.Listener.Accept()
}

// TestMetricsServerBounds: the metrics server holds at most
// metricsMaxConns connections however many clients connect and send
// nothing (the rest wait unaccepted in the backlog, costing no
// descriptor); a closed one frees its slot for the next; oversized headers
// are refused; what net/http logs goes to the error log, not to stderr.
func TestMetricsServerBounds(t *testing.T) {
	var logText testutil.Buffer
	log := errlog.New(&logText, errlog.LevelInfo)
	logged := logText.String
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok 1\n") })
	ms := newMetricsServer(h, log, func() (bool, string) { return true, "ready" }, nil, nil)
	full := make(chan struct{}, 100)
	ms.full = func() { full <- struct{}{} }
	accepted, closed := make(chan struct{}, 1000), make(chan struct{}, 1000)
	ms.srv.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			accepted <- struct{}{}
		case http.StateClosed:
			closed <- struct{}{}
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- ms.Serve(&failOnce{Listener: ln}) }()
	defer func() {
		ms.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()

	// A scrape works, through the injected accept error.
	if got := scrape(t, ln.Addr().String()); got != "ok 1\n" {
		t.Fatalf("scrape = %q", got)
	}
	<-accepted
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	<-closed
	if got := logged(); !strings.Contains(got, "[error] ") ||
		!strings.Contains(got, "metrics_listen: http: Accept error: accept: injected temporary error; retrying in") {
		t.Errorf("error log = %q, want net/http's accept error in it", got)
	}

	// Half-open clients: metricsMaxConns are accepted, then the server
	// waits for a slot.
	const clients = metricsMaxConns + 20
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < clients; i++ {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for i := 0; i < metricsMaxConns; i++ {
		<-accepted
	}
	<-full
	select {
	case <-accepted:
		t.Fatalf("a connection beyond the %d allowed was accepted", metricsMaxConns)
	default:
	}
	// One leaves: one more is accepted, and the server waits again.
	conns[0].Close()
	<-accepted
	<-full
	select {
	case <-accepted:
		t.Fatalf("a connection beyond the %d allowed was accepted", metricsMaxConns)
	default:
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil

	// Headers beyond metricsMaxHeaderBytes (plus net/http's 4 KiB slack)
	// are refused with 431.
	req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/metrics", nil)
	req.Header.Set("X-Big", strings.Repeat("a", metricsMaxHeaderBytes+8<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("oversized headers: status %d, want 431", resp.StatusCode)
	}
}

// TestHealthEndpoints: /healthz answers while the process serves; /readyz
// is 200 while serving and 503 once a graceful quit closed the listeners
// and sessions drain, as Kubernetes' probes expect.
func TestHealthEndpoints(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	text := strings.Replace(guideConf(ups, ""), "worker_processes 2;", "worker_processes 2;\nmetrics_listen 127.0.0.1:60;", 1)
	tb := startEngine(t, dir, text)
	maddr := tb.eng.MetricsAddr()
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := apiDo(t, maddr, "GET", path, ""); code != 200 {
			t.Errorf("%s while serving: %d %q", path, code, body)
		}
	}
	held := holdSession(t, tb.addr)
	close(tb.quit)
	testutil.WaitFor(t, "quitting", 5*time.Second, func() bool { return tb.eng.quitting.Load() })
	code, body := apiDo(t, maddr, "GET", "/readyz", "")
	if code != 503 || !strings.Contains(body, "draining") || !strings.Contains(body, "1 sessions still open") {
		t.Errorf("/readyz while draining: %d %q, want 503 draining with 1 session", code, body)
	}
	if code, body := apiDo(t, maddr, "GET", "/healthz", ""); code != 200 {
		t.Errorf("/healthz while draining: %d %q", code, body)
	}
	if err := held.echo(16); err != nil {
		t.Errorf("the held session while draining: %v", err)
	}
	held.c.Close()
	select {
	case <-tb.done:
		tb.done <- nil // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after the last session ended")
	}
}
