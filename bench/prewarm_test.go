package bench

import (
	"crypto/tls"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPrewarmConfig: the pre-warmed column's tlsrelay gets
// proxy_ssl_prewarm in its server block; NGINX never does.
func TestPrewarmConfig(t *testing.T) {
	s := testSpec(tls.VersionTLS13, true)
	cfg, err := TlsrelayConfig(s)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(cfg, "proxy_ssl_prewarm") {
		t.Errorf("tlsrelay config without Prewarm has the directive:\n%s", cfg)
	}
	s.Prewarm = 4
	cfg, err = TlsrelayConfig(s)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(cfg, "\n        proxy_ssl_prewarm 4;\n    }") {
		t.Errorf("tlsrelay config lacks proxy_ssl_prewarm 4 in its server block:\n%s", cfg)
	}
	ng, err := NginxConfig(s, "")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(ng, "proxy_ssl_prewarm") {
		t.Errorf("NGINX config has tlsrelay's proxy_ssl_prewarm:\n%s", ng)
	}
}

// TestPrewarmMarkdown: the row renders p50 / p99 per column (the
// pre-warmed tlsrelay after tlsrelay, a missing proxy left out) and the
// ratios to NGINX.
func TestPrewarmMarkdown(t *testing.T) {
	res := sampleResults()
	one := func(v float64) Summary { return Summarize([]float64{v}) }
	pw := PrewarmColumn(4)
	res.Prewarm = []PrewarmRow{{
		Name: "TLS1.3 ecdsa-p256 resumed, one client every 10ms", Prewarm: 4, Conns: 400, IntervalMillis: 10,
		Columns: []string{"tlsrelay", pw, "NGINX", "HAProxy"},
		Cells: map[string]*LatencyCell{
			"tlsrelay": {P50Millis: one(0.8), P99Millis: one(2)},
			pw:         {P50Millis: one(0.2), P99Millis: one(0.5)},
			"NGINX":    {P50Millis: one(1), P99Millis: one(2.5)},
			"HAProxy":  {Err: "not installed"},
		},
	}}
	md := Markdown(res)
	for _, want := range []string{
		"## Pre-warmed upstream connections (`proxy_ssl_prewarm`)",
		"| load | tlsrelay | tlsrelay prewarm 4 | NGINX | tlsrelay/NGINX p50 | tlsrelay prewarm 4/NGINX p50 | p99 |",
		"| TLS1.3 ecdsa-p256 resumed, one client every 10ms | 0.80 / 2.00 | 0.20 / 0.50 | 1.00 / 2.50 | 0.80× | 0.20× | 0.20× |",
		"400 new client connections per round", "`proxy_ssl_prewarm 4`",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if i, j := strings.Index(md, "## Pre-warmed"), strings.Index(md, "## 3. Throughput"); i < 0 || j < 0 || i > j {
		t.Errorf("the pre-warm section is not before throughput")
	}
}

// TestSmokePrewarm runs the pre-warm row end to end with a freshly built
// tlsrelay (and NGINX when installed), tiny: the pre-warmed column must
// see its upstreams hold the pool before its load, and every column must
// have numbers.
func TestSmokePrewarm(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end smoke test")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "tlsrelay")
	build := exec.Command("go", "build", "-o", bin, "../cmd/tlsrelay")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building tlsrelay: %v\n%s", err, out)
	}
	peers := []Peer{Tlsrelay{Path: bin}}
	infos := []PeerInfo{{Name: "tlsrelay", Available: true}}
	if ng, err := exec.LookPath("nginx"); err == nil {
		mod := "/usr/lib/nginx/modules/ngx_stream_module.so"
		if _, err := os.Stat(mod); err != nil {
			mod = ""
		}
		peers = append(peers, Nginx{Path: ng, Module: mod})
		infos = append(infos, PeerInfo{Name: "NGINX", Available: true})
	}
	res, err := Run(t.Context(), Options{
		Peers: peers, Dir: dir, Rounds: 1, LoadWorkers: 2, Quick: true,
		Only:    map[string]bool{RowPrewarm: true},
		Prewarm: 2, PrewarmConns: 20, PrewarmInterval: 5 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	res.Peers = infos
	if len(res.Prewarm) != 1 {
		t.Fatalf("%d pre-warm rows, want 1", len(res.Prewarm))
	}
	row := res.Prewarm[0]
	if want := len(peers) + 1; len(row.Columns) != want {
		t.Fatalf("columns %q, want %d", row.Columns, want)
	}
	for _, c := range row.Columns {
		lc := row.Cells[c]
		if lc.Err != "" || !lc.P50Millis.Valid() || lc.P50Millis.Median <= 0 || lc.Rounds[0].Conns != 20 {
			t.Errorf("column %s: %+v", c, lc)
		}
	}
	if err := WriteReport(dir, res); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(dir, ReportFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", prewarmMarkdown(res))
	if !strings.Contains(string(md), "| tlsrelay prewarm 2 |") {
		t.Errorf("report has no pre-warmed column:\n%s", md)
	}
}
