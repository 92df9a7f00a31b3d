package metrics_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tlsrelay/tlsrelay/engine/metrics"
	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
	"github.com/tlsrelay/tlsrelay/pool"
	"github.com/tlsrelay/tlsrelay/pool/dial"
	"github.com/tlsrelay/tlsrelay/tlsbridge"
)

// tlsServer is a TLS 1.2 upstream on 127.0.0.1:0 (its tickets arrive in
// the handshake) that drains each connection.
func tlsServer(t *testing.T, set *pki.Set) string {
	t.Helper()
	cfg := &tls.Config{Certificates: []tls.Certificate{set.Server.TLSCertificate()}, MaxVersion: tls.VersionTLS12}
	return testutil.TLSServer(t, cfg, func(c *tls.Conn) { testutil.Discard(c) })
}

// rig is a real group of upstreams, a real dialer, a TLS policy with a real
// session store, and an Engine, fed by real dials.
type rig struct {
	live, dead, down string
	backend, strict  *pool.Group
	dialer           *dial.Dialer
	store            *tlsbridge.SessionStore
	eng              *metrics.Engine
	reloaded         time.Time
}

func newRig(t *testing.T) *rig {
	t.Helper()
	set, err := pki.NewSet(pki.ECDSAP256, 0)
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewSet(pki.ECDSAP256, 0)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{live: tlsServer(t, set), dead: backend.RefusingAddr(t), down: "127.0.0.1:9", eng: new(metrics.Engine)}
	dead := pool.NewServerConfig(r.dead)
	dead.FailTimeout = time.Hour
	down := pool.NewServerConfig(r.down)
	down.Down = true
	if r.backend, err = pool.NewGroup(pool.GroupConfig{Name: "backend",
		Servers: []pool.ServerConfig{dead, pool.NewServerConfig(r.live), down}}, nil); err != nil {
		t.Fatal(err)
	}
	if r.strict, err = pool.NewGroup(pool.GroupConfig{Name: "strict",
		Servers: []pool.ServerConfig{pool.NewServerConfig(r.live)}}, nil); err != nil {
		t.Fatal(err)
	}
	r.store = tlsbridge.NewSessionStore(tlsbridge.SessionStoreOptions{})
	reuse, err := tlsbridge.NewPolicy(tlsbridge.PolicyConfig{SessionReuse: true}, r.store)
	if err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(ca, other.Root.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	verify, err := tlsbridge.NewPolicy(tlsbridge.PolicyConfig{Verify: true, VerifyDepth: 1, TrustedCertificate: ca}, r.store)
	if err != nil {
		t.Fatal(err)
	}
	r.dialer = dial.NewDialer(dial.Config{MinWorkers: 2})
	t.Cleanup(r.dialer.Close)

	// backend: the first dial tries the refusing peer (banned for an hour
	// after), then the live one, full; the next two resume.
	for i, want := range []bool{false, true, true} {
		res := r.dial(t, r.backend, reuse)
		if res.Err != nil || res.State.DidResume != want {
			t.Fatalf("backend dial %d: resumed %v err %v", i, res.State.DidResume, res.Err)
		}
	}
	// strict: the upstream's certificate is not from the trusted CA.
	if res := r.dial(t, r.strict, verify); tlsbridge.Classify(res.Err) != tlsbridge.ReasonUnknownCA {
		t.Fatalf("strict dial: %v", res.Err)
	}

	// The engine's own facts, as the engine would record them.
	r.eng.Loaded(time.Unix(1_700_000_000, 0))
	for range 4 {
		r.eng.SessionAccepted()
	}
	r.eng.Relayed(false, 100)
	r.eng.Relayed(true, 300)
	r.eng.Relayed(false, 5)
	r.eng.SessionEnded(metrics.ReasonClientClosed)
	r.eng.SessionEnded(metrics.ReasonUpstreamUnreachable)
	r.eng.IdleTimeout()
	r.eng.Relayed(false, 1)
	r.eng.Relayed(true, 2)
	r.eng.SessionEnded(metrics.ReasonIdleTimeout)
	r.eng.Stall()
	r.eng.Pause()
	r.eng.Pause()
	r.eng.ReloadFailed()
	r.reloaded = time.Unix(1_700_000_123, 500_000_000)
	r.eng.ReloadOK(r.reloaded)
	return r
}

// dial runs one session's dial job on g with policy p, as the engine wires
// it, and releases the connection.
func (r *rig) dial(t *testing.T, g *pool.Group, p *tlsbridge.Policy) dial.Result {
	t.Helper()
	target := func(peer *pool.Peer) tlsbridge.Target {
		return tlsbridge.Target{Addr: peer.Addr.String(), Host: peer.Host}
	}
	done := make(chan dial.Result, 1)
	j := &dial.Job{
		Sel: g.NewSelection("", 0, time.Now()),
		TLS: func(peer *pool.Peer, _ net.Addr) (*tls.Config, error) {
			return p.ClientConfig(target(peer), tlsbridge.Vars{})
		},
		FullTLS: func(peer *pool.Peer, _ net.Addr) (*tls.Config, error) {
			return p.ConfigWithoutResumption(target(peer), tlsbridge.Vars{})
		},
		Observe: func(peer *pool.Peer, _ net.Addr, cs tls.ConnectionState, err error) bool {
			return p.Observe(target(peer), tlsbridge.Vars{}, cs, err)
		},
		ConnectTimeout: 5 * time.Second,
		NextUpstream:   true,
		Done:           func(res dial.Result) { done <- res },
	}
	if err := r.dialer.Submit(j); err != nil {
		t.Fatal(err)
	}
	var res dial.Result
	select {
	case res = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("dial not done after 10s")
	}
	if res.Err == nil {
		res.TLS.Close()
		j.Sel.Release(res.Peer)
	}
	return res
}

func (r *rig) collector() *metrics.Collector {
	return metrics.NewCollector(metrics.Sources{
		Engine: r.eng,
		Peers: func(yield func(string, *pool.Peer) bool) {
			for _, g := range []*pool.Group{r.backend, r.strict} {
				for _, p := range g.Peers() {
					if !yield(g.Name(), p) {
						return
					}
				}
			}
		},
		Dialer: func() *dial.Dialer { return r.dialer },
		Stores: func(yield func(*tlsbridge.SessionStore) bool) { yield(r.store) },
	})
}

// scrape GETs /metrics and returns the body.
func scrape(t *testing.T, url string) []byte {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET %s: %s %q\n%s", url, resp.Status, resp.Header.Get("Content-Type"), body)
	}
	return body
}

type families map[string]*dto.MetricFamily

func parse(t *testing.T, body []byte) families {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parsing the scrape: %v\n%s", err, body)
	}
	return fams
}

// sample returns the metric of family name whose labels are exactly
// labels ("k=v" pairs).
func (f families) sample(t *testing.T, name string, labels ...string) *dto.Metric {
	t.Helper()
	mf := f[name]
	if mf == nil {
		t.Fatalf("no family %s", name)
	}
	for _, m := range mf.GetMetric() {
		var got []string
		for _, l := range m.GetLabel() {
			got = append(got, l.GetName()+"="+l.GetValue())
		}
		if strings.Join(got, ",") == strings.Join(labels, ",") {
			return m
		}
	}
	t.Fatalf("no %s{%s}", name, strings.Join(labels, ","))
	return nil
}

// value returns a counter's or gauge's value.
func (f families) value(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	m := f.sample(t, name, labels...)
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	t.Fatalf("%s is neither a counter nor a gauge", name)
	return 0
}

func TestScrape(t *testing.T) {
	r := newRig(t)
	// The engine serves this handler behind metrics_listen (its bounded
	// server is tested in engine, TestMetricsServerBounds).
	srv := httptest.NewServer(metrics.Handler(r.collector()))
	defer srv.Close()
	url := srv.URL + "/metrics"
	sc := r.store.Counters() // the store is quiet: what the scrape must show
	body := scrape(t, url)
	f := parse(t, body)

	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"tlsrelay_sessions_accepted_total", nil, 4},
		{"tlsrelay_sessions_active", nil, 1},
		{"tlsrelay_sessions_ended_total", []string{"reason=client_closed"}, 1},
		{"tlsrelay_sessions_ended_total", []string{"reason=upstream_unreachable"}, 1},
		{"tlsrelay_sessions_ended_total", []string{"reason=idle_timeout"}, 1},
		{"tlsrelay_sessions_ended_total", []string{"reason=shutdown"}, 0},
		{"tlsrelay_bytes_total", []string{"direction=from_client"}, 106},
		{"tlsrelay_bytes_total", []string{"direction=to_client"}, 302},
		{"tlsrelay_bytes_total", []string{"direction=from_upstream"}, 302},
		{"tlsrelay_bytes_total", []string{"direction=to_upstream"}, 106},
		{"tlsrelay_backpressure_stalls_total", nil, 1},
		{"tlsrelay_backpressure_pauses_total", nil, 2},
		{"tlsrelay_idle_timeouts_total", nil, 1},
		{"tlsrelay_reloads_total", []string{"result=ok"}, 1},
		{"tlsrelay_reloads_total", []string{"result=failed"}, 1},
		{"tlsrelay_last_reload_success_timestamp_seconds", nil, 1_700_000_123.5},

		{"tlsrelay_upstream_handshakes_total", []string{"outcome=full", "peer=" + r.live, "upstream=backend"}, 1},
		{"tlsrelay_upstream_handshakes_total", []string{"outcome=resumed", "peer=" + r.live, "upstream=backend"}, 2},
		{"tlsrelay_upstream_handshakes_total", []string{"outcome=failed", "peer=" + r.live, "upstream=backend"}, 0},
		{"tlsrelay_upstream_handshakes_total", []string{"outcome=full", "peer=" + r.dead, "upstream=backend"}, 0},
		{"tlsrelay_upstream_handshakes_total", []string{"outcome=failed", "peer=" + r.live, "upstream=strict"}, 1},
		{"tlsrelay_upstream_handshake_failures_total", []string{"class=unknown_ca", "peer=" + r.live, "upstream=strict"}, 1},
		{"tlsrelay_upstream_handshake_failures_total", []string{"class=timeout", "peer=" + r.live, "upstream=strict"}, 0},
		{"tlsrelay_upstream_handshake_failures_total", []string{"class=other", "peer=" + r.live, "upstream=strict"}, 0},
		{"tlsrelay_upstream_peer_selections_total", []string{"peer=" + r.dead, "upstream=backend"}, 1},
		{"tlsrelay_upstream_peer_selections_total", []string{"peer=" + r.live, "upstream=backend"}, 3},
		{"tlsrelay_upstream_peer_failures_total", []string{"peer=" + r.dead, "upstream=backend"}, 1},
		{"tlsrelay_upstream_peer_failures_total", []string{"peer=" + r.live, "upstream=strict"}, 1},
		{"tlsrelay_upstream_peer_active_connections", []string{"peer=" + r.live, "upstream=backend"}, 0},
		{"tlsrelay_upstream_peer_state", []string{"peer=" + r.live, "state=up", "upstream=backend"}, 1},
		{"tlsrelay_upstream_peer_state", []string{"peer=" + r.live, "state=banned", "upstream=backend"}, 0},
		{"tlsrelay_upstream_peer_state", []string{"peer=" + r.dead, "state=banned", "upstream=backend"}, 1},
		{"tlsrelay_upstream_peer_state", []string{"peer=" + r.dead, "state=up", "upstream=backend"}, 0},
		{"tlsrelay_upstream_peer_state", []string{"peer=" + r.down, "state=down", "upstream=backend"}, 1},

		{"tlsrelay_dial_in_flight", []string{"state=connecting"}, 0},
		{"tlsrelay_dial_in_flight", []string{"state=handshaking"}, 0},
		{"tlsrelay_dial_jobs_total", []string{"result=submitted"}, 4},
		{"tlsrelay_dial_jobs_total", []string{"result=rejected"}, 0},
		{"tlsrelay_dial_jobs_total", []string{"result=cancelled"}, 0},

		// One key (the reuse policy's, to the live peer); Go's TLS 1.2
		// server sends a ticket with each handshake, resumed or not.
		{"tlsrelay_session_ticket_keys", nil, 1},
		{"tlsrelay_session_tickets", nil, float64(sc.Tickets)},
		{"tlsrelay_session_tickets_stored_total", nil, float64(sc.Stored)},
		{"tlsrelay_session_tickets_dropped_total", []string{"reason=evicted"}, float64(sc.Evicted)},
		{"tlsrelay_session_tickets_dropped_total", []string{"reason=expired"}, 0},
		{"tlsrelay_session_tickets_dropped_total", []string{"reason=refused"}, 0},
	}
	if sc.Tickets < 1 || sc.Stored < 1 || sc.Tickets != int64(sc.Stored-sc.Evicted) {
		t.Errorf("store counters %+v", sc)
	}
	for _, c := range checks {
		if got := f.value(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s{%s} = %v, want %v", c.name, strings.Join(c.labels, ","), got, c.want)
		}
	}
	workers := f.value(t, "tlsrelay_dial_workers", "state=busy") + f.value(t, "tlsrelay_dial_workers", "state=idle")
	if workers != float64(r.dialer.Workers()) || workers < 2 {
		t.Errorf("dial workers busy+idle = %v, the dialer runs %d", workers, r.dialer.Workers())
	}

	// Histograms: one connect per attempt that connected, one handshake
	// per completed handshake; cumulative buckets end at the count.
	for _, h := range []struct {
		name    string
		upsteam string
		count   uint64
	}{
		{"tlsrelay_upstream_connect_duration_seconds", "backend", 3},
		{"tlsrelay_upstream_handshake_duration_seconds", "backend", 3},
		{"tlsrelay_upstream_connect_duration_seconds", "strict", 1},
		{"tlsrelay_upstream_handshake_duration_seconds", "strict", 0},
	} {
		m := f.sample(t, h.name, "peer="+r.live, "upstream="+h.upsteam).GetHistogram()
		if m == nil || m.GetSampleCount() != h.count {
			t.Errorf("%s{%s}: %v, want count %d", h.name, h.upsteam, m, h.count)
			continue
		}
		b := m.GetBucket()
		// The text parser adds the +Inf bucket.
		if len(b) != pool.HistogramBuckets+1 || b[0].GetUpperBound() != 0.0001 || b[len(b)-2].GetUpperBound() != 10 ||
			!math.IsInf(b[len(b)-1].GetUpperBound(), 1) || b[len(b)-1].GetCumulativeCount() != h.count {
			t.Errorf("%s: buckets %v", h.name, b)
		}
		if h.count > 0 && (m.GetSampleSum() <= 0 || m.GetSampleSum() > 10*float64(h.count)) {
			t.Errorf("%s: sum %v", h.name, m.GetSampleSum())
		}
	}
	if f["go_goroutines"] == nil || f["process_cpu_seconds_total"] == nil {
		t.Error("no Go or process collector series")
	}
	for name, mf := range f {
		if !strings.HasPrefix(name, "tlsrelay_") {
			continue
		}
		if mf.GetHelp() == "" {
			t.Errorf("%s has no HELP", name)
		}
		if mf.GetType() == dto.MetricType_COUNTER && !strings.HasSuffix(name, "_total") {
			t.Errorf("counter %s does not end in _total", name)
		}
	}

	promtoolCheck(t, body)

	// Counters move on with new facts and never go back: one more
	// session, one more resumed handshake.
	r.eng.SessionAccepted()
	if res := r.dial(t, r.backend, mustPolicy(t, r.store)); res.Err != nil {
		t.Fatal(res.Err)
	}
	f2 := parse(t, scrape(t, url))
	if got := f2.value(t, "tlsrelay_sessions_accepted_total"); got != 5 {
		t.Errorf("accepted after one more: %v", got)
	}
	if got := f2.value(t, "tlsrelay_upstream_peer_selections_total", "peer="+r.live, "upstream=backend"); got != 4 {
		t.Errorf("selections after one more: %v", got)
	}
	for name, mf := range f {
		if mf.GetType() != dto.MetricType_COUNTER || !strings.HasPrefix(name, "tlsrelay_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			if after := f2.value(t, name, labels...); after < m.GetCounter().GetValue() {
				t.Errorf("%s{%s} went back from %v to %v", name, strings.Join(labels, ","), m.GetCounter().GetValue(), after)
			}
		}
	}
}

// mustPolicy is a second policy on the rig's store, as a reload with the
// same TLS settings builds: it shares the store's tickets.
func mustPolicy(t *testing.T, store *tlsbridge.SessionStore) *tlsbridge.Policy {
	t.Helper()
	p, err := tlsbridge.NewPolicy(tlsbridge.PolicyConfig{SessionReuse: true}, store)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// promtoolCheck runs `promtool check metrics` on a scrape. Without
// promtool the check is skipped, except in CI (CI=true), where it fails.
func promtoolCheck(t *testing.T, body []byte) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool is not on PATH (Debian: apt-get install prometheus); CI needs it")
		}
		t.Log("promtool is not on PATH: the promtool check is skipped")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
	t.Logf("promtool check metrics: clean (%d bytes) %s", len(body), bytes.TrimSpace(out))
}

// TestPromtoolSeesProblems makes sure the promtool check can fail: a
// counter without _total is refused.
func TestPromtoolSeesProblems(t *testing.T) {
	path := testutil.NeedProgram(t, "promtool", "prometheus")
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = strings.NewReader("# HELP bad_counter A counter.\n# TYPE bad_counter counter\nbad_counter 1\n")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("promtool accepted a counter without _total: %v\n%s", err, out)
	}
}

// TestDuplicatePeersAdd: two peers of one group and address (a server
// listed twice, implicit groups of one name) make one series, their counts
// added and their state the better one; the pedantic registry finds no
// inconsistency.
func TestDuplicatePeersAdd(t *testing.T) {
	a := pool.NewServerConfig("10.0.0.1:443")
	down := a
	down.Down = true
	g1, err := pool.NewGroup(pool.GroupConfig{Name: "u", Servers: []pool.ServerConfig{a}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	g2, err := pool.NewGroup(pool.GroupConfig{Name: "u", Servers: []pool.ServerConfig{down}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p1, p2 := g1.Peers()[0], g2.Peers()[0]
	p1.ObserveHandshake(time.Millisecond, false)
	p2.ObserveHandshake(time.Millisecond, false)
	p2.ObserveHandshakeFailure(dial.FailureClass(tlsbridge.ReasonTimeout))
	p2.ObserveConnect(time.Second)
	c := metrics.NewCollector(metrics.Sources{Peers: func(yield func(string, *pool.Peer) bool) {
		_ = yield("u", p2) && yield("u", p1)
	}})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	f := families{}
	for _, mf := range mfs {
		f[mf.GetName()] = mf
	}
	peer := []string{"peer=10.0.0.1:443", "upstream=u"}
	if got := f.value(t, "tlsrelay_upstream_handshakes_total", "outcome=full", peer[0], peer[1]); got != 2 {
		t.Errorf("full %v", got)
	}
	if got := f.value(t, "tlsrelay_upstream_handshake_failures_total", "class=timeout", peer[0], peer[1]); got != 1 {
		t.Errorf("timeouts %v", got)
	}
	if got := f.value(t, "tlsrelay_upstream_peer_state", peer[0], "state=up", peer[1]); got != 1 {
		t.Errorf("state up %v", got)
	}
	h := f.sample(t, "tlsrelay_upstream_handshake_duration_seconds", peer...).GetHistogram()
	if h.GetSampleCount() != 2 || math.Abs(h.GetSampleSum()-0.002) > 1e-9 {
		t.Errorf("handshake histogram %v", h)
	}
	if n := len(f["tlsrelay_upstream_peer_state"].GetMetric()); n != pool.PeerStates {
		t.Errorf("%d state series for one peer", n)
	}
	if f["tlsrelay_sessions_accepted_total"] != nil || f["tlsrelay_dial_in_flight"] != nil {
		t.Error("series of sources that are not set")
	}
}

func TestReasons(t *testing.T) {
	tests := []struct {
		text  string
		want  metrics.Reason
		label string
	}{
		{"client closed", metrics.ReasonClientClosed, "client_closed"},
		{"upstream closed", metrics.ReasonUpstreamClosed, "upstream_closed"},
		{"idle timeout", metrics.ReasonIdleTimeout, "idle_timeout"},
		{"upstream unreachable", metrics.ReasonUpstreamUnreachable, "upstream_unreachable"},
		{"dial queue full", metrics.ReasonDialQueueFull, "dial_queue_full"},
		{"resume failed", metrics.ReasonResumeFailed, "resume_failed"},
		{"shutdown", metrics.ReasonShutdown, "shutdown"},
		{"access forbidden", metrics.ReasonForbidden, "forbidden"},
		{"limit_conn", metrics.ReasonLimited, "limit_conn"},
		{"upstream aborted", metrics.ReasonUpstreamAborted, "upstream_aborted"},
		{"client aborted", metrics.ReasonClientAborted, "client_aborted"},
		{"other", metrics.ReasonOther, "other"},
	}
	seen, seenText := map[string]bool{}, map[string]bool{}
	for _, tc := range tests {
		if got := tc.want.Text(); got != tc.text || tc.want.String() != tc.label {
			t.Errorf("reason %d: text %q label %q, want %q %q", tc.want, got, tc.want.String(), tc.text, tc.label)
		}
		seen[tc.want.String()] = true
		seenText[tc.want.Text()] = true
	}
	// Every reason but ReasonNone has its own label and its own words.
	if len(seen) != metrics.Reasons-1 || len(seenText) != metrics.Reasons-1 {
		t.Errorf("%d labels and %d texts for %d reasons", len(seen), len(seenText), metrics.Reasons-1)
	}
	if metrics.ReasonNone.Text() != "" || metrics.ReasonNone.String() != "other" {
		t.Errorf("ReasonNone: text %q label %q", metrics.ReasonNone.Text(), metrics.ReasonNone.String())
	}
	// An out-of-range reason is counted as other, not dropped or panicking.
	var e metrics.Engine
	e.SessionAccepted()
	e.SessionEnded(metrics.Reason(200))
	e.SessionAccepted()
	e.SessionEnded(metrics.ReasonNone)
	e.Relayed(false, -5)
	e.Relayed(true, 1)
	s := e.Snapshot()
	if s.Ended[metrics.ReasonOther] != 2 || s.Ended[metrics.ReasonNone] != 0 || s.Active != 0 || s.BytesToUp != 0 || s.BytesFromClient != 0 || s.BytesFromUp != 1 || s.BytesToClient != 1 {
		t.Errorf("snapshot %+v", s)
	}
}

// TestRecordNoAlloc: the methods the data path calls allocate nothing.
func TestRecordNoAlloc(t *testing.T) {
	var e metrics.Engine
	now := time.Now()
	n := testing.AllocsPerRun(1000, func() {
		e.SessionAccepted()
		e.Relayed(true, 3)
		e.SessionEnded(metrics.ReasonClientClosed)
		e.Stall()
		e.Pause()
		e.IdleTimeout()
		e.Handshake(true)
		e.Handshake(false)
		e.AttemptFailed()
		e.ReloadOK(now)
		e.ReloadFailed()
		_ = e.Active()
	})
	if n != 0 {
		t.Fatalf("%v allocations per run", n)
	}
}
