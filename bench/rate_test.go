package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// TestMain lets this test binary serve as the sustained-rate row's child,
// as tlsrelay-bench does: the row's default command is this executable
// with -rate-child and the spec file.
func TestMain(m *testing.M) {
	if len(os.Args) == 3 && os.Args[1] == "-rate-child" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := RunRateChild(ctx, os.Args[2])
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "rate child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func samplePairs() []RatePair {
	at, n := 1.37, 30000
	return []RatePair{
		{Proxy: "tlsrelay", Kind: RateCloseNotify, Seconds: 3, Conns: 6000, ConnsPerSec: 2000, Group: "X25519", UpstreamResumed: 5990,
			OKPerSec: []int{2100, 1900, 2000}, FailedPerSec: []int{0, 0, 0}, TimeWaitUpstream: 5990, UpstreamAccepted: 6001},
		{Proxy: "NGINX", Kind: RateBareFIN, Seconds: 3, Conns: 1100, Failed: 30000, ConnsPerSec: 366.7,
			FirstFailure: &at, FirstErr: "reading the echo: EOF",
			OKPerSec: []int{1100, 0, 0}, FailedPerSec: []int{5000, 12000, 13000}, TimeWaitProxy: 1024, AddrNotAvail: &n},
		{Proxy: "HAProxy", Kind: RateUpstreamFirst, Err: "starting haproxy: exit status 1"},
	}
}

// TestRatePairJSON: what the child writes, the parent reads back whole.
func TestRatePairJSON(t *testing.T) {
	path := filepath.Join(t.TempDir(), "result.json")
	for _, p := range samplePairs() {
		if err := WriteRatePair(path, p); err != nil {
			t.Fatal(err)
		}
		got, err := ReadRatePair(path)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, p) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, p)
		}
	}
	if _, err := ReadRatePair(filepath.Join(t.TempDir(), "none.json")); err == nil {
		t.Error("reading a missing result: no error")
	}
}

// TestRateMarkdown: the row renders its table, series and chart from fixed
// results; a skipped row says why in one line, and its chart too.
func TestRateMarkdown(t *testing.T) {
	res := sampleResults()
	res.Rate = &RateRow{Seconds: 3, Workers: 16, PortLow: RatePortLow, PortHigh: RatePortHigh, SourceAddrs: RateSourceAddrs, Pairs: samplePairs()}
	md := Markdown(res)
	for _, want := range []string{
		"## New connections at a sustained rate (TIME_WAIT)",
		"`net.ipv4.tcp_tw_reuse = 0`", "1,024 ephemeral ports", "4,064 loopback addresses", "EADDRNOTAVAIL",
		"(" + rateDoc + ")", "![completed and failed connections per second](bench/sustained-rate.svg)",
		"| tlsrelay | close_notify | 6000 | 0 | 2000 | – | none | 0 / 5990 | – | X25519 |",
		"| NGINX | bare FIN | 1100 | 30000 | 367 | – | 1.4 s | 1024 / 0 | 30000 | – |",
		"| HAProxy | upstream first | n/a (error: starting haproxy: exit status 1) |" + strings.Repeat("  |", 7) + "\n", // 10 cells, as the header
		"NGINX, bare FIN:                       1100/5000 0/12000 0/13000",
		"tcp_tw_reuse 0 and 1,024 ports, upstream closing kinds whose connections failed: tlsrelay none of 1; NGINX bare FIN (first at 1.4 s).",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if i, j := strings.Index(md, "## New connections at a sustained rate"), strings.Index(md, "## 5. Reference"); i < 0 || j < 0 || i > j {
		t.Error("the sustained-rate section is not before the reference limits")
	}
	svg := RateSVG(res)
	checkSVG(t, "rate chart", svg)
	for _, want := range []string{"completed connections/s", "failed connections/s", "NGINX · upstream bare FIN", "<polyline"} {
		if !strings.Contains(svg, want) {
			t.Errorf("rate chart lacks %q", want)
		}
	}
	if strings.Contains(svg, "HAProxy") {
		t.Error("rate chart has a line for a pair that failed")
	}

	res.Rate = &RateRow{Skipped: "skipped: network namespaces need root (CAP_SYS_ADMIN); running as uid 1000"}
	md = Markdown(res)
	if !strings.Contains(md, "\nSkipped: network namespaces need root (CAP_SYS_ADMIN); running as uid 1000.\n") {
		t.Errorf("a skipped row does not say why:\n%s", md)
	}
	svg = RateSVG(res)
	checkSVG(t, "skipped rate chart", svg)
	if !strings.Contains(svg, "need root") {
		t.Errorf("the chart of a skipped row does not say why:\n%s", svg)
	}
	checkSVG(t, "no rate chart", RateSVG(&Results{}))
}

// TestRateMarkdownRounds: with rounds, a (proxy, kind) pair is one row:
// its connections/s the median with (min–max), set against NGINX's with
// the same upstream, † when a round did not run; its counts the median
// round's; the first failure gives the rounds that had one; a round
// that could not run is said; the per-second series name their round and
// the chart draws each pair's median round.
func TestRateMarkdownRounds(t *testing.T) {
	res := sampleResults()
	at := func(v float64) *float64 { return &v }
	n := func(v int) *int { return &v }
	pair := func(proxy, kind string, round, conns, failed int, first *float64, ok0 int) RatePair {
		return RatePair{Proxy: proxy, Kind: kind, Round: round, Seconds: 2, Conns: conns, Failed: failed,
			ConnsPerSec: float64(conns) / 2, FirstFailure: first, OKPerSec: []int{ok0, conns - ok0}, FailedPerSec: []int{0, failed},
			TimeWaitUpstream: conns / 2, AddrNotAvail: n(failed)}
	}
	res.Rate = &RateRow{Seconds: 2, Workers: 16, PortLow: RatePortLow, PortHigh: RatePortHigh, SourceAddrs: RateSourceAddrs,
		Pairs: []RatePair{
			pair("tlsrelay", RateBareFIN, 1, 4000, 0, nil, 1999),
			pair("NGINX", RateBareFIN, 1, 1000, 900, at(0.4), 1000),
			pair("NGINX", RateBareFIN, 2, 1100, 800, at(0.2), 1100),
			pair("tlsrelay", RateBareFIN, 2, 4400, 0, nil, 2222),
			pair("tlsrelay", RateBareFIN, 3, 4200, 0, nil, 2111),
			{Proxy: "NGINX", Kind: RateBareFIN, Round: 3, Err: "nginx did not start"},
		}}
	res.Rate.Pairs[0].AddrNotAvail, res.Rate.Pairs[3].AddrNotAvail, res.Rate.Pairs[4].AddrNotAvail = nil, nil, nil
	md := Markdown(res)
	for _, want := range []string{
		"| tlsrelay | bare FIN | 4200 | 0 | 2100 (2000–2200) | 4.00× | none | 0 / 2100 | – | – |",
		"| NGINX | bare FIN | 1000 | 900 | 525 (500–550) † | – | 0.3 s (0.2–0.4), 2 of 2 rounds | 0 / 500 | 900 | – |",
		"† some rounds of this cell failed",
		"Each pair ran in 3 rounds",
		"tlsrelay, bare FIN, round 2:           2222/0 2178/0",
		"NGINX bare FIN (first at 0.3 s (0.2–0.4), 2 of 2 rounds); connections/s tlsrelay/NGINX by upstream closing kind: bare FIN 4.00×.",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, rateMarkdown(res))
		}
	}
	svg := RateSVG(res)
	checkSVG(t, "rate chart", svg)
	// The median round of tlsrelay is round 3 (2100/s): its first second.
	if !strings.Contains(svg, "(each line: its median round)") || strings.Count(svg, "<polyline") != 4 {
		t.Errorf("chart: want 2 pairs × 2 panels, their median rounds:\n%s", svg)
	}
	if got := rateGroups(res.Rate)[0].median(); got.Round != 3 {
		t.Errorf("median round of tlsrelay: %d, want 3", got.Round)
	}
}

// TestSmokeRate runs the row for real, 1 s per pair, with a freshly built
// tlsrelay and NGINX, in namespaces with 128 ephemeral ports so the wall
// comes within the second: NGINX, which sends the first FIN when the
// upstream answers with a bare FIN, must fail there, and it must not fail
// when the upstream answers its close_notify with one (the answer meets a
// closed socket and resets it, so next to nothing stays in TIME_WAIT on
// its side).
func TestSmokeRate(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end smoke test")
	}
	testutil.NeedNetns(t)
	ng := testutil.NginxPath(t)
	mod := testutil.NginxStreamModule
	if _, err := os.Stat(mod); err != nil {
		mod = ""
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "tlsrelay")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/tlsrelay").CombinedOutput(); err != nil {
		t.Fatalf("building tlsrelay: %v\n%s", err, out)
	}
	var steps []string
	res, err := Run(t.Context(), Options{
		Peers: []Peer{Tlsrelay{Path: bin}, Nginx{Path: ng, Module: mod}}, Dir: dir,
		Only:         map[string]bool{RowRate: true},
		RateDuration: time.Second, RatePorts: 128, Rounds: 2,
		TotalSteps: func(n int) { steps = append(steps, fmt.Sprint(n)) },
		Step: func(label string, done bool, outcome string) {
			if done {
				t.Logf("%s: %s", label, outcome)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(steps, []string{"12"}) {
		t.Errorf("TotalSteps told %v, want [12] (6 pairs, 2 rounds)", steps)
	}
	if res.Rate == nil || res.Rate.Skipped != "" || len(res.Rate.Pairs) != 12 || res.Rate.rounds() != 2 {
		t.Fatalf("rate row: %+v", res.Rate)
	}
	byName := map[string]RatePair{}
	for i, p := range res.Rate.Pairs {
		if want := i/6 + 1; p.Round != want {
			t.Errorf("pair %d (%s/%s) ran in round %d, want %d", i, p.Proxy, p.Kind, p.Round, want)
		}
		byName[p.Proxy+"/"+p.Kind] = p // the second round's
		if p.Err != "" || p.Conns == 0 || len(p.OKPerSec) != 1 || len(p.FailedPerSec) != 1 ||
			p.OKPerSec[0] != p.Conns || p.FailedPerSec[0] != p.Failed || p.UpstreamAccepted == 0 {
			t.Errorf("pair %s/%s: %+v", p.Proxy, p.Kind, p)
		}
		if p.Group != "X25519" || 2*p.UpstreamResumed < p.UpstreamAccepted {
			t.Errorf("pair %s/%s: key exchange %q, %d of %d upstream handshakes resumed; want X25519 (Groups %s), most resumed",
				p.Proxy, p.Kind, p.Group, p.UpstreamResumed, p.UpstreamAccepted, Groups)
		}
	}
	if p := byName["NGINX/"+RateBareFIN]; p.Failed == 0 || p.FirstFailure == nil || p.AddrNotAvail == nil || *p.AddrNotAvail == 0 || p.TimeWaitProxy < 100 {
		t.Errorf("NGINX with a bare-FIN upstream did not reach the wall of 128 ports: %+v", p)
	}
	if p := byName["NGINX/"+RateCloseNotify]; p.Failed != 0 || p.TimeWaitProxy > p.Conns/10 {
		t.Errorf("NGINX with a close_notify upstream: %+v", p)
	}
	if err := WriteReport(dir, res); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(rateMarkdown(res), "128 ephemeral ports (`ip_local_port_range 40000 40127`)") {
		t.Error("the report does not give the ports the row had")
	}
	if st, err := os.Stat(filepath.Join(dir, RateChart)); err != nil || st.Size() == 0 {
		t.Errorf("%s: %v", RateChart, err)
	}
	t.Logf("\n%s", rateMarkdown(res))
}
