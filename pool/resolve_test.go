package pool

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/dnstest"
)

func TestSRVName(t *testing.T) {
	for _, tc := range []struct{ service, name, want string }{
		{"http", "backend.example.com", "_http._tcp.backend.example.com"},
		{"tls", "svc.test.", "_tls._tcp.svc.test"},
		{"_http._tcp", "backend.example.com", "_http._tcp.backend.example.com"},
		{"server1.backend", "example.com", "server1.backend.example.com"},
		{"_http", "example.com", "__http._tcp.example.com"},
	} {
		if got := SRVName(tc.service, tc.name); got != tc.want {
			t.Errorf("SRVName(%q, %q) = %q, want %q", tc.service, tc.name, got, tc.want)
		}
	}
}

// startDNS starts a loopback DNS server for the test.
func startDNS(t testing.TB) *dnstest.Server {
	t.Helper()
	d, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

// logLines collects a resolver's log.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logf(failed bool, format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	lv := "info"
	if failed {
		lv = "error"
	}
	l.lines = append(l.lines, lv+": "+fmt.Sprintf(format, args...))
}

func (l *logLines) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

func peerAddrs(g *Group) []string {
	var out []string
	for _, p := range g.Peers() {
		s := p.String()
		if p.Backup {
			s += " backup"
		}
		out = append(out, s)
	}
	return out
}

func newResolveGroup(t *testing.T, method BalancerConfig, servers ...ServerConfig) *Group {
	t.Helper()
	g, err := NewGroup(GroupConfig{Name: "backend", Servers: servers, Balancer: method}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func resolveServer(addr string) ServerConfig {
	sc := NewServerConfig(addr)
	sc.Resolve = true
	return sc
}

func TestResolveAddressFamilies(t *testing.T) {
	d := startDNS(t)
	d.SetAddrs("app.test", "127.0.0.2", "::1", "127.0.0.3")
	for _, tc := range []struct {
		ipv6 bool
		want []string
	}{
		{false, []string{"127.0.0.2:8443", "127.0.0.3:8443"}},
		{true, []string{"127.0.0.2:8443", "127.0.0.3:8443", "[::1]:8443"}},
	} {
		g := newResolveGroup(t, BalancerConfig{}, resolveServer("app.test:8443"))
		if len(g.Peers()) != 0 {
			t.Fatalf("a resolve server has peers before its first answer: %v", peerAddrs(g))
		}
		r := NewResolver(g, ResolverConfig{Servers: []string{d.Addr()}, IPv4: true, IPv6: tc.ipv6, Timeout: 2 * time.Second})
		next := r.Resolve(context.Background(), 0)
		if got := peerAddrs(g); !slices.Equal(got, tc.want) {
			t.Errorf("ipv6=%v: peers %v, want %v", tc.ipv6, got, tc.want)
		}
		// TTL 1s: due again in about a second.
		if d := time.Until(next); d < 500*time.Millisecond || d > 1500*time.Millisecond {
			t.Errorf("next resolution in %v, want about 1s (the TTL)", d)
		}
		if ok, failed := g.Resolutions(); ok != 1 || failed != 0 {
			t.Errorf("resolutions ok=%d failed=%d, want 1 and 0", ok, failed)
		}
	}
}

// TestResolveCarriesPeers: an address that stays keeps its Peer (and so its
// connections and failures); a new one starts fresh; a session that
// started before the change releases into the peer it got.
func TestResolveCarriesPeers(t *testing.T) {
	d := startDNS(t)
	d.SetAddrs("app.test", "127.0.0.2", "127.0.0.3")
	sc := resolveServer("app.test:8443")
	sc.MaxFails = 3
	g := newResolveGroup(t, BalancerConfig{}, NewServerConfig("127.0.0.9:8443"), sc)
	r := NewResolver(g, ResolverConfig{Servers: []string{d.Addr()}, IPv4: true, Valid: time.Minute})
	if next := r.Resolve(context.Background(), 1); time.Until(next) < 50*time.Second {
		t.Errorf("valid=1m: next resolution in %v", time.Until(next))
	}
	if got, want := peerAddrs(g), []string{"127.0.0.9:8443", "127.0.0.2:8443", "127.0.0.3:8443"}; !slices.Equal(got, want) {
		t.Fatalf("peers %v, want %v", got, want)
	}
	now := time.Now()
	byAddr := func() map[string]*Peer {
		m := map[string]*Peer{}
		for _, p := range g.Peers() {
			m[p.String()] = p
		}
		return m
	}
	old := byAddr()
	// A session holds 127.0.0.2; a failure is counted on 127.0.0.3.
	var held *Peer
	failed := false
	for held == nil || !failed {
		s := g.NewSelection("", 0, now)
		p, err := s.Next(now)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case p.String() == "127.0.0.3:8443" && !failed:
			s.Failed(p, now)
			failed = true
		case p.String() == "127.0.0.2:8443" && held == nil:
			held = p
			defer s.Release(p)
		default:
			s.Release(p)
		}
	}
	d.SetAddrs("app.test", "127.0.0.3", "127.0.0.4")
	r.Resolve(context.Background(), 1)
	cur := byAddr()
	if got, want := peerAddrs(g), []string{"127.0.0.9:8443", "127.0.0.3:8443", "127.0.0.4:8443"}; !slices.Equal(got, want) {
		t.Fatalf("peers %v, want %v", got, want)
	}
	if cur["127.0.0.3:8443"] != old["127.0.0.3:8443"] || cur["127.0.0.3:8443"].Fails() != 1 {
		t.Errorf("the address that stayed lost its state (fails %d)", cur["127.0.0.3:8443"].Fails())
	}
	// A weight the runtime API set does not make the next resolution
	// take the peer for a new one (the state stays with it).
	if err := g.SetWeight(cur["127.0.0.3:8443"], 4); err != nil {
		t.Fatal(err)
	}
	r.Resolve(context.Background(), 1)
	if p := byAddr()["127.0.0.3:8443"]; p != old["127.0.0.3:8443"] || p.Fails() != 1 {
		t.Errorf("after SetWeight, a re-resolution replaced the peer that stayed (fails %d)", p.Fails())
	}
	if cur["127.0.0.4:8443"].Fails() != 0 || cur["127.0.0.4:8443"].Selected() != 0 {
		t.Errorf("a new address starts with state")
	}
	if held.Conns() != 1 {
		t.Errorf("the removed address's session: conns %d, want 1", held.Conns())
	}
	// New sessions never get the removed address.
	for range 20 {
		s := g.NewSelection("", 0, now)
		p, err := s.Next(now)
		if err != nil {
			t.Fatal(err)
		}
		if p == held {
			t.Fatal("a removed address was selected")
		}
		s.Release(p)
	}
}

// TestResolveBalancers: every balancing method picks only among the new
// addresses after a change (the consistent hashing ring is rebuilt).
func TestResolveBalancers(t *testing.T) {
	d := startDNS(t)
	for _, b := range []BalancerConfig{
		{}, {Method: MethodLeastConn}, {Method: MethodHash}, {Method: MethodHash, Consistent: true},
		{Method: MethodRandom}, {Method: MethodRandom, Two: true},
	} {
		d.SetAddrs("app.test", "127.0.0.2", "127.0.0.3")
		g := newResolveGroup(t, b, resolveServer("app.test:8443"))
		r := NewResolver(g, ResolverConfig{Servers: []string{d.Addr()}, IPv4: true})
		r.Resolve(context.Background(), 0)
		d.SetAddrs("app.test", "127.0.0.4", "127.0.0.5", "127.0.0.6")
		r.Resolve(context.Background(), 0)
		seen := map[string]int{}
		for i := range 60 {
			now := time.Now()
			s := g.NewSelection(fmt.Sprintf("client-%d", i), 0, now)
			p, err := s.Next(now)
			if err != nil {
				t.Fatalf("%+v: %v", b, err)
			}
			seen[p.String()]++
			s.Release(p)
		}
		for a := range seen {
			if a != "127.0.0.4:8443" && a != "127.0.0.5:8443" && a != "127.0.0.6:8443" {
				t.Errorf("%+v: picked %s, which DNS no longer gives", b, a)
			}
		}
		if len(seen) < 2 {
			t.Errorf("%+v: picked only %v", b, seen)
		}
	}
}

func TestResolveFailures(t *testing.T) {
	d := startDNS(t)
	d.SetAddrs("app.test", "127.0.0.2")
	g := newResolveGroup(t, BalancerConfig{}, resolveServer("app.test:8443"))
	var log logLines
	r := NewResolver(g, ResolverConfig{Servers: []string{d.Addr()}, IPv4: true, IPv6: true, Timeout: 300 * time.Millisecond, Logf: log.logf})
	r.Resolve(context.Background(), 0)
	want := []string{"127.0.0.2:8443"}

	d.SetMode(dnstest.Drop)
	t0 := time.Now()
	next := r.Resolve(context.Background(), 0)
	if took := time.Since(t0); took < 250*time.Millisecond || took > 2*time.Second {
		t.Errorf("a silent name server took %v, want resolver_timeout (300ms)", took)
	}
	if d := time.Until(next); d < 500*time.Millisecond || d > 1500*time.Millisecond {
		t.Errorf("after a timeout: next in %v, want max(resolver_timeout, 1s)", d)
	}
	if got := peerAddrs(g); !slices.Equal(got, want) {
		t.Errorf("after a timeout: peers %v, want %v", got, want)
	}
	if !strings.Contains(log.text(), "error: app.test could not be resolved (110: Operation timed out)") {
		t.Errorf("log:\n%s", log.text())
	}

	d.SetMode(dnstest.ServFail)
	r.Resolve(context.Background(), 0)
	if got := peerAddrs(g); !slices.Equal(got, want) {
		t.Errorf("after SERVFAIL: peers %v, want %v", got, want)
	}
	if !strings.Contains(log.text(), "error: app.test could not be resolved (2: Server failure)") {
		t.Errorf("log:\n%s", log.text())
	}

	// NXDOMAIN: the name has no addresses now (NGINX removes them).
	d.SetMode(dnstest.Answer)
	d.SetAddrs("app.test")
	next = r.Resolve(context.Background(), 0)
	if got := peerAddrs(g); len(got) != 0 {
		t.Errorf("after NXDOMAIN: peers %v, want none", got)
	}
	if d := time.Until(next); d < 9*time.Second {
		t.Errorf("after NXDOMAIN: next in %v, want 10s", d)
	}
	if !strings.Contains(log.text(), "error: app.test could not be resolved (3: Host not found)") {
		t.Errorf("log:\n%s", log.text())
	}
	now := time.Now()
	if _, err := g.NewSelection("", 0, now).Next(now); err == nil || !strings.Contains(err.Error(), "no live upstreams") {
		t.Errorf("a group without addresses: %v, want no live upstreams", err)
	}
	if ok, failed := g.Resolutions(); ok != 1 || failed != 3 {
		t.Errorf("resolutions ok=%d failed=%d, want 1 and 3", ok, failed)
	}

	// A closed port: NGINX's recv() error, then a timeout.
	d.Close()
	r.Resolve(context.Background(), 0)
	if !strings.Contains(log.text(), "while resolving, resolver: "+d.Addr()) {
		t.Errorf("log:\n%s", log.text())
	}
	if !strings.Contains(log.text(), "app.test could not be resolved (110: Operation timed out)") {
		t.Errorf("log:\n%s", log.text())
	}
}

// TestResolveNextNameServer: a name server that refuses is passed over for
// the next one at once.
func TestResolveNextNameServer(t *testing.T) {
	dead := startDNS(t)
	d := startDNS(t)
	dead.Close()
	d.SetAddrs("app.test", "127.0.0.2")
	g := newResolveGroup(t, BalancerConfig{}, resolveServer("app.test:8443"))
	var log logLines
	r := NewResolver(g, ResolverConfig{Servers: []string{dead.Addr(), d.Addr()}, IPv4: true, Logf: log.logf})
	t0 := time.Now()
	r.Resolve(context.Background(), 0)
	if took := time.Since(t0); took > 2*time.Second {
		t.Errorf("took %v", took)
	}
	if got := peerAddrs(g); !slices.Equal(got, []string{"127.0.0.2:8443"}) {
		t.Errorf("peers %v\n%s", got, log.text())
	}
	if !strings.Contains(log.text(), "error: read udp") || !strings.Contains(log.text(), "while resolving, resolver: "+dead.Addr()) {
		t.Errorf("log:\n%s", log.text())
	}
}

func TestResolveSRV(t *testing.T) {
	d := startDNS(t)
	d.SetTruncate(true) // UDP answers truncated: asked again over TCP
	d.SetSRV("_tls._tcp.svc.test",
		dnstest.SRV{Priority: 10, Weight: 5, Port: 9001, Target: "a.test"},
		dnstest.SRV{Priority: 10, Weight: 1, Port: 9002, Target: "b.test"},
		dnstest.SRV{Priority: 20, Weight: 1, Port: 9003, Target: "c.test"},
	)
	d.SetAddrs("a.test", "127.0.0.2")
	d.SetAddrs("b.test", "127.0.0.3")
	d.SetAddrs("c.test", "127.0.0.4")
	sc := resolveServer("svc.test")
	sc.Service = "tls"
	g := newResolveGroup(t, BalancerConfig{}, sc)
	var log logLines
	r := NewResolver(g, ResolverConfig{Servers: []string{d.Addr()}, IPv4: true, Logf: log.logf})
	r.Resolve(context.Background(), 0)
	if got, want := peerAddrs(g), []string{"127.0.0.2:9001", "127.0.0.3:9002", "127.0.0.4:9003 backup"}; !slices.Equal(got, want) {
		t.Fatalf("peers %v, want %v\n%s", got, want, log.text())
	}
	if _, tcp := d.Queries(); tcp == 0 {
		t.Error("truncated answers were not asked again over TCP")
	}
	ps := g.Peers()
	if ps[0].Weight != 5 || ps[1].Weight != 1 || ps[0].Host != "a.test" || ps[0].Name != "a.test:9001" {
		t.Errorf("SRV peers: %+v %+v", ps[0], ps[1])
	}
	// Smooth WRR over the primaries by SRV weight: 5 to a, 1 to b.
	count := map[string]int{}
	for range 6 {
		now := time.Now()
		s := g.NewSelection("", 0, now)
		p, err := s.Next(now)
		if err != nil {
			t.Fatal(err)
		}
		count[p.Host]++
		s.Release(p)
	}
	if count["a.test"] != 5 || count["b.test"] != 1 {
		t.Errorf("selections %v, want a.test 5, b.test 1", count)
	}
	// A weight= on the server line wins over the records'.
	sc.Weight = 3
	g2 := newResolveGroup(t, BalancerConfig{}, sc)
	NewResolver(g2, ResolverConfig{Servers: []string{d.Addr()}, IPv4: true}).Resolve(context.Background(), 0)
	for _, p := range g2.Peers() {
		if p.Weight != 3 {
			t.Errorf("weight=3: peer %s weight %d", p, p.Weight)
		}
	}
	// With hash (no backup tier) only the lowest priority number counts.
	sc.Weight = 1
	g3 := newResolveGroup(t, BalancerConfig{Method: MethodHash}, sc)
	NewResolver(g3, ResolverConfig{Servers: []string{d.Addr()}, IPv4: true}).Resolve(context.Background(), 0)
	if got, want := peerAddrs(g3), []string{"127.0.0.2:9001", "127.0.0.3:9002"}; !slices.Equal(got, want) {
		t.Errorf("hash: peers %v, want %v", got, want)
	}
	// A target that does not resolve is logged and left out.
	d.SetAddrs("b.test")
	r.Resolve(context.Background(), 0)
	if got, want := peerAddrs(g), []string{"127.0.0.2:9001", "127.0.0.4:9003 backup"}; !slices.Equal(got, want) {
		t.Errorf("peers %v, want %v", got, want)
	}
	if !strings.Contains(log.text(), "error: b.test could not be resolved (3: Host not found) while resolving service tls of svc.test") {
		t.Errorf("log:\n%s", log.text())
	}
	// No SRV records at all.
	d.SetSRV("_tls._tcp.svc.test")
	r.Resolve(context.Background(), 0)
	if !strings.Contains(log.text(), "error: service tls of svc.test could not be resolved (3: Host not found)") {
		t.Errorf("log:\n%s", log.text())
	}
}

// TestResolveRun: Run resolves at once, then at the TTL, and ends with its
// context; a health checker follows the new peers.
func TestResolveRun(t *testing.T) {
	d := startDNS(t)
	d.SetAddrs("app.test", "127.0.0.2")
	g := newResolveGroup(t, BalancerConfig{}, resolveServer("app.test:8443"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		NewResolver(g, ResolverConfig{Servers: []string{d.Addr()}, IPv4: true}).Run(ctx)
		close(done)
	}()
	probed := make(chan string, 100)
	h := NewHealthChecker(g, HealthConfig{Interval: time.Hour, Probe: func(_ context.Context, p *Peer) error {
		probed <- p.String()
		return nil
	}})
	hdone := make(chan struct{})
	go func() {
		h.Run(ctx)
		close(hdone)
	}()
	waitProbe := func(want string) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case a := <-probed:
				if a == want {
					return
				}
			case <-timeout:
				t.Fatalf("no probe of %s; peers %v", want, peerAddrs(g))
			}
		}
	}
	waitProbe("127.0.0.2:8443")
	d.SetAddrs("app.test", "127.0.0.3")
	waitProbe("127.0.0.3:8443") // after the TTL (1s), without a reload
	if got := peerAddrs(g); !slices.Equal(got, []string{"127.0.0.3:8443"}) {
		t.Errorf("peers %v", got)
	}
	cancel()
	<-done
	<-hdone
}

// TestInheritResolved: a reload that rebuilds the group starts its
// `resolve` servers with the addresses and state the old group had.
func TestInheritResolved(t *testing.T) {
	d := startDNS(t)
	d.SetAddrs("app.test", "127.0.0.2", "127.0.0.3")
	old := newResolveGroup(t, BalancerConfig{}, resolveServer("app.test:8443"))
	NewResolver(old, ResolverConfig{Servers: []string{d.Addr()}, IPv4: true}).Resolve(context.Background(), 0)
	now := time.Now()
	s := old.NewSelection("", 0, now)
	p, _ := s.Next(now)
	s.Failed(p, now)

	same := newResolveGroup(t, BalancerConfig{}, resolveServer("app.test:8443"))
	if !same.SameAs(old) {
		t.Error("an unchanged resolve group is not SameAs the old one")
	}
	sc := resolveServer("app.test:8443")
	sc.MaxConns = 10
	changed := newResolveGroup(t, BalancerConfig{}, sc, NewServerConfig("127.0.0.9:8443"))
	if changed.SameAs(old) {
		t.Error("a changed group is SameAs the old one")
	}
	changed.Inherit(old)
	if got, want := peerAddrs(changed), []string{"127.0.0.2:8443", "127.0.0.3:8443", "127.0.0.9:8443"}; !slices.Equal(got, want) {
		t.Fatalf("peers %v, want %v", got, want)
	}
	for _, q := range changed.Peers() {
		if q.MaxConns != 10 && q.String() != "127.0.0.9:8443" {
			t.Errorf("carried peer %s keeps the old parameters", q)
		}
	}
	if !changed.dueAt(0).Equal(old.dueAt(0)) {
		t.Errorf("due %v, want the old group's %v", changed.dueAt(0), old.dueAt(0))
	}
	if ok, _ := changed.Resolutions(); ok != 1 {
		t.Errorf("resolution counters not carried: ok=%d", ok)
	}
}

// BenchmarkResolve is the cost of one resolution of a name with two
// addresses (A and AAAA queries over loopback UDP, an unchanged answer).
// cpu-µs/op is the process's CPU time per resolution, the test DNS
// server's share included.
func BenchmarkResolve(b *testing.B) {
	d := startDNS(b)
	d.SetAddrs("app.test", "127.0.0.2", "127.0.0.3")
	g, err := NewGroup(GroupConfig{Name: "backend", Servers: []ServerConfig{resolveServer("app.test:8443")}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	r := NewResolver(g, ResolverConfig{Servers: []string{d.Addr()}, IPv4: true, IPv6: true})
	ctx := context.Background()
	b.ReportAllocs()
	var r0, r1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
	n := 0
	for b.Loop() {
		r.Resolve(ctx, 0)
		n++
	}
	syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
	cpu := time.Duration(r1.Utime.Nano() + r1.Stime.Nano() - r0.Utime.Nano() - r0.Stime.Nano())
	b.ReportMetric(float64(cpu.Microseconds())/float64(n), "cpu-µs/op")
	if len(g.Peers()) != 2 {
		b.Fatalf("peers %v", g.Peers())
	}
}

// TestResolveConcurrentSelections: sessions select and release on several
// goroutines while resolutions replace the peer set, for every balancing
// method (run with -race). Every connection counted is given back to the
// peer it was taken from, removed or not.
func TestResolveConcurrentSelections(t *testing.T) {
	sets := [][]resolvedAddr{
		{{addr: netip.MustParseAddrPort("127.0.0.2:8443"), host: "app.test"}, {addr: netip.MustParseAddrPort("127.0.0.3:8443"), host: "app.test"}},
		{{addr: netip.MustParseAddrPort("127.0.0.3:8443"), host: "app.test"}},
		nil,
		{{addr: netip.MustParseAddrPort("127.0.0.4:8443"), host: "app.test"}, {addr: netip.MustParseAddrPort("127.0.0.5:8443"), host: "app.test"}, {addr: netip.MustParseAddrPort("127.0.0.6:8443"), host: "app.test"}},
	}
	for _, b := range []BalancerConfig{
		{}, {Method: MethodLeastConn}, {Method: MethodHash}, {Method: MethodHash, Consistent: true},
		{Method: MethodRandom}, {Method: MethodRandom, Two: true},
	} {
		// max_fails=0: the failures below ban nobody.
		static, dynamic := NewServerConfig("127.0.0.9:8443"), resolveServer("app.test:8443")
		static.MaxFails, dynamic.MaxFails = 0, 0
		g := newResolveGroup(t, b, static, dynamic)
		var mu sync.Mutex
		seen := map[*Peer]bool{}
		var picks atomic.Int64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					now := time.Now()
					s := g.NewSelection(fmt.Sprintf("k%d-%d", w, i), 0, now)
					p, err := s.Next(now)
					if err != nil {
						continue
					}
					mu.Lock()
					seen[p] = true
					mu.Unlock()
					picks.Add(1)
					if i%7 == 0 {
						s.Failed(p, now)
						if q, err := s.Next(now); err == nil {
							s.Release(q)
							mu.Lock()
							seen[q] = true
							mu.Unlock()
						}
						continue
					}
					s.Release(p)
				}
			}()
		}
		for i := range 200 {
			// Some selections between two publications (counted from
			// the last one: the workers may have raced ahead before it).
			for deadline, want := time.Now().Add(10*time.Second), picks.Load()+10; picks.Load() < want; {
				if time.Now().After(deadline) {
					t.Fatalf("%+v: no selections", b)
				}
				runtime.Gosched()
			}
			g.setResolved(1, sets[i%len(sets)], time.Now())
		}
		close(stop)
		wg.Wait()
		for p := range seen {
			if p.Conns() != 0 {
				t.Errorf("%+v: peer %s has %d connections after every session ended", b, p, p.Conns())
			}
		}
		if len(seen) < 4 {
			t.Errorf("%+v: only %d peers were selected", b, len(seen))
		}
	}
}

// TestResolveDetails: what NGINX's resolver does and tlsrelay's did not
// (issue 24): an answer holding only a CNAME is followed with a query for
// its target; two identical SRV records are two peers; a reload that
// changes a resolve server's port uses the new port for the addresses it
// carries over.
func TestResolveDetails(t *testing.T) {
	d := startDNS(t)
	t.Run("CNAME only", func(t *testing.T) {
		d.SetCNAME("alias.test", "chain.test")
		d.SetCNAME("chain.test", "real.test")
		d.SetAddrs("real.test", "127.0.0.7")
		g := newResolveGroup(t, BalancerConfig{}, resolveServer("alias.test:443"))
		NewResolver(g, ResolverConfig{Servers: []string{d.Addr()}, IPv4: true}).Resolve(context.Background(), 0)
		if got := peerAddrs(g); !slices.Equal(got, []string{"127.0.0.7:443"}) {
			t.Errorf("peers %v, want the CNAME chain's target", got)
		}
	})
	t.Run("identical SRV records", func(t *testing.T) {
		d.SetSRV("_x._tcp.twin.test", dnstest.SRV{Priority: 1, Weight: 1, Port: 9001, Target: "t.test"},
			dnstest.SRV{Priority: 1, Weight: 1, Port: 9001, Target: "t.test"})
		d.SetAddrs("t.test", "127.0.0.8")
		sc := resolveServer("twin.test")
		sc.Service = "x"
		g := newResolveGroup(t, BalancerConfig{}, sc)
		r := NewResolver(g, ResolverConfig{Servers: []string{d.Addr()}, IPv4: true})
		for range 2 { // the second answer keeps both peers
			r.Resolve(context.Background(), 0)
			if got := peerAddrs(g); !slices.Equal(got, []string{"127.0.0.8:9001", "127.0.0.8:9001"}) {
				t.Fatalf("peers %v, want two", got)
			}
		}
		if ps := g.Peers(); ps[0] == ps[1] {
			t.Error("the two records share one peer")
		}
	})
	t.Run("reload changes the port", func(t *testing.T) {
		d.SetAddrs("app.test", "127.0.0.2")
		old := newResolveGroup(t, BalancerConfig{}, resolveServer("app.test:8443"))
		NewResolver(old, ResolverConfig{Servers: []string{d.Addr()}, IPv4: true}).Resolve(context.Background(), 0)
		next := newResolveGroup(t, BalancerConfig{}, resolveServer("app.test:9443"))
		next.Inherit(old)
		if got := peerAddrs(next); !slices.Equal(got, []string{"127.0.0.2:9443"}) {
			t.Errorf("peers after the reload %v, want the new port", got)
		}
	})
}
