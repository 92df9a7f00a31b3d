package engine

import (
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/dnstest"
	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

func TestNameServerAddr(t *testing.T) {
	for _, tc := range []struct {
		in   string
		host string
		port uint16
		err  bool
	}{
		{"127.0.0.1", "127.0.0.1", 53, false},
		{"127.0.0.1:5353", "127.0.0.1", 5353, false},
		{"[::1]", "::1", 53, false},
		{"[::1]:5353", "::1", 5353, false},
		{"ns.example.com", "ns.example.com", 53, false},
		{"ns.example.com:54", "ns.example.com", 54, false},
		{"127.0.0.1:0", "", 0, true},
		{"127.0.0.1:x", "", 0, true},
		{"[::1", "", 0, true},
		{":53", "", 0, true},
		{"127.0.0.1:", "", 0, true},
		{"[::1]53", "", 0, true},
		{"[::1]:", "", 0, true},
	} {
		host, port, err := nameServerAddr(tc.in)
		if (err != nil) != tc.err || host != tc.host || port != tc.port {
			t.Errorf("nameServerAddr(%q) = %q, %d, %v; want %q, %d, error %v", tc.in, host, port, err, tc.host, tc.port, tc.err)
		}
	}
}

// TestCheckResolve: Check accepts resolve and service= (it queries no DNS
// for them) and reads the resolver in force for each group: the
// upstream's own, else the stream level's.
func TestCheckResolve(t *testing.T) {
	text := `stream {
resolver 127.0.0.1:5353 valid=5s ipv6=off;
upstream a { zone z 64k; server app.invalid:443 resolve; server 127.0.0.1:1; }
upstream b { zone z; resolver [::1] 127.0.0.2:54; resolver_timeout 2s; server svc.invalid service=tls resolve; }
upstream c { server 127.0.0.1:2; }
server { listen 127.0.0.1:12345; proxy_pass a; }
server { listen 127.0.0.1:12346; proxy_pass b; }
server { listen 127.0.0.1:12347; proxy_pass c; }
}
`
	cfg, _, err := conf.Parse("t.conf", []byte(text), conf.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := build(cfg, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.free()
	if len(p.resolvers) != 2 {
		t.Fatalf("%d groups to resolve, want 2 (a and b)", len(p.resolvers))
	}
	for _, gr := range p.resolvers {
		switch gr.g.Name() {
		case "a":
			if c := gr.cfg; !slices.Equal(c.Servers, []string{"127.0.0.1:5353"}) || c.Valid != 5*time.Second || c.IPv6 || c.Timeout != 30*time.Second {
				t.Errorf("a: %+v", c)
			}
			if n := len(gr.g.Peers()); n != 1 {
				t.Errorf("a: %d peers before any answer, want the static one", n)
			}
		case "b":
			if c := gr.cfg; !slices.Equal(c.Servers, []string{"[::1]:53", "127.0.0.2:54"}) || c.Valid != 0 || !c.IPv6 || c.Timeout != 2*time.Second {
				t.Errorf("b: %+v", c)
			}
		default:
			t.Errorf("group %s resolved", gr.g.Name())
		}
	}
}

// startDNS starts a loopback DNS server for the test.
func startDNS(t *testing.T) *dnstest.Server {
	t.Helper()
	d, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

// startUpstreamAt starts an echo upstream on addr ("127.0.0.2:0").
func startUpstreamAt(t *testing.T, set *pki.Set, addr string) *backend.Server {
	t.Helper()
	s, err := backend.Start(backend.Config{Addr: addr, TLS: set.ServerConfig(), Mode: backend.Echo})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// startUpstreamPair starts echo upstreams on 127.0.0.2 and 127.0.0.3 on
// one port, as a name's two addresses are. The port is the first one
// free on both: another test's client socket may hold 127.0.0.3 at the
// port the kernel gave 127.0.0.2.
func startUpstreamPair(t *testing.T, set *pki.Set) (up1, up2 *backend.Server, port string) {
	t.Helper()
	for range 20 {
		a, err := backend.Start(backend.Config{Addr: "127.0.0.2:0", TLS: set.ServerConfig(), Mode: backend.Echo})
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ = net.SplitHostPort(a.Addr())
		b, err := backend.Start(backend.Config{Addr: "127.0.0.3:" + port, TLS: set.ServerConfig(), Mode: backend.Echo})
		if err != nil {
			a.Close()
			continue
		}
		t.Cleanup(func() { a.Close(); b.Close() })
		return a, b, port
	}
	t.Fatal("no port free on both 127.0.0.2 and 127.0.0.3 in 20 tries")
	return nil, nil, ""
}

// resolveConf is the guide's server (verifying "localhost", the test
// certificate's name) over a zoned upstream of servers, with the resolver
// at dnsAddr and the given resolver parameters and resolver_timeout.
func resolveConf(dnsAddr, params, timeout string, servers ...string) string {
	stream := fmt.Sprintf("resolver %s valid=1s%s;\nresolver_timeout %s;", dnsAddr, params, timeout)
	return healthConf(servers, stream, "proxy_ssl_name localhost; proxy_connect_timeout 2s;")
}

// waitPeers waits until the running plan's group "backend" has the
// addresses want (the resolver's publication is the event).
func waitPeers(t *testing.T, tb *testbed, want ...string) {
	t.Helper()
	var got []string
	testutil.WaitFor(t, fmt.Sprintf("peers %v", want), 10*time.Second, func() bool {
		got = got[:0]
		for _, p := range tb.eng.plan.Load().groups["backend"].Peers() {
			got = append(got, p.String())
		}
		return slices.Equal(got, want)
	})
}

// holdEcho opens a session, checks it echoes, and returns it open.
func holdEcho(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	echoOn(t, c, "first")
	return c
}

// echoOn writes msg on c and reads it back.
func echoOn(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("writing: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo: %q, %v", got, err)
	}
}

// TestResolveFollowsDNS: the addresses of a `resolve` server follow the
// DNS answers without a reload; new sessions go to the new address, the
// session on the old one goes on.
func TestResolveFollowsDNS(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	up1, up2, port := startUpstreamPair(t, set)
	d := startDNS(t)
	d.SetAddrs("app.test", "127.0.0.2")
	tb := startEngine(t, dir, resolveConf(d.Addr(), "", "2s", "app.test:"+port+" resolve"))
	waitPeers(t, tb, "127.0.0.2:"+port)

	old := holdEcho(t, tb.addr)
	if n := up1.Stats().Accepted; n != 1 {
		t.Fatalf("upstream 1 accepted %d", n)
	}
	d.SetAddrs("app.test", "127.0.0.3")
	waitPeers(t, tb, "127.0.0.3:"+port)
	if _, err := echoOnce(tb.addr, []byte("new"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if a1, a2 := up1.Stats().Accepted, up2.Stats().Accepted; a1 != 1 || a2 != 1 {
		t.Errorf("accepted: old address %d, new address %d; want 1 and 1", a1, a2)
	}
	echoOn(t, old, "still there")
	want := fmt.Sprintf(`upstream "backend": server app.test:%s resolved to 127.0.0.3:%s (was 127.0.0.2:%s)`, port, port, port)
	if !strings.Contains(tb.logText(), want) {
		t.Errorf("log lacks %q:\n%s", want, tb.logText())
	}
	if ok, _ := tb.eng.plan.Load().groups["backend"].Resolutions(); ok < 2 {
		t.Errorf("resolutions ok = %d", ok)
	}
}

// TestResolveFailureKeepsAddresses: a name server that does not answer,
// or answers SERVFAIL, leaves the addresses as they were, logged in
// NGINX's words.
func TestResolveFailureKeepsAddresses(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	up := startUpstreamAt(t, set, "127.0.0.2:0")
	_, port, _ := net.SplitHostPort(up.Addr())
	d := startDNS(t)
	d.SetAddrs("app.test", "127.0.0.2")
	tb := startEngine(t, dir, "metrics_listen 127.0.0.1:0;\n"+resolveConf(d.Addr(), "", "300ms", "app.test:"+port+" resolve"))
	waitPeers(t, tb, "127.0.0.2:"+port)

	d.SetMode(dnstest.Drop)
	testutil.WaitFor(t, "the timeout's log line", 10*time.Second, func() bool {
		return strings.Contains(tb.logText(), "[error]") && strings.Contains(tb.logText(), "app.test could not be resolved (110: Operation timed out)")
	})
	d.SetMode(dnstest.ServFail)
	testutil.WaitFor(t, "the SERVFAIL's log line", 10*time.Second, func() bool {
		return strings.Contains(tb.logText(), "app.test could not be resolved (2: Server failure)")
	})
	waitPeers(t, tb, "127.0.0.2:"+port)
	if _, err := echoOnce(tb.addr, []byte("kept"), 5*time.Second); err != nil {
		t.Fatalf("a session while DNS fails: %v", err)
	}
	text := scrape(t, tb.eng.MetricsAddr())
	if v := metricValue(t, text, "tlsrelay_upstream_resolutions_total", "upstream=backend", "result=failed"); v < 2 {
		t.Errorf("upstream_resolutions_total{result=failed} = %v, want 2 or more", v)
	}
	if v := metricValue(t, text, "tlsrelay_upstream_resolutions_total", "upstream=backend", "result=ok"); v < 1 {
		t.Errorf("upstream_resolutions_total{result=ok} = %v", v)
	}
}

// TestResolveNXDOMAINAtStart: a name that does not exist yet loads (no
// addresses: sessions get no live upstreams) and is used once it appears.
func TestResolveNXDOMAINAtStart(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	up := startUpstreamAt(t, set, "127.0.0.2:0")
	_, port, _ := net.SplitHostPort(up.Addr())
	d := startDNS(t)
	tb := startEngine(t, dir, resolveConf(d.Addr(), "", "2s", "app.test:"+port+" resolve"))
	testutil.WaitFor(t, "the NXDOMAIN's log line", 10*time.Second, func() bool {
		return strings.Contains(tb.logText(), "app.test could not be resolved (3: Host not found)")
	})
	if _, err := echoOnce(tb.addr, []byte("x"), 5*time.Second); err == nil {
		t.Fatal("a session reached an upstream before the name existed")
	}
	testutil.WaitFor(t, "no live upstreams", 5*time.Second, func() bool {
		return strings.Contains(tb.logText(), `no live upstreams while connecting to upstream "backend"`)
	})
	d.SetAddrs("app.test", "127.0.0.2")
	waitPeers(t, tb, "127.0.0.2:"+port) // valid=1s: asked again after a second
	if _, err := echoOnce(tb.addr, []byte("now"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestResolveSRVPriorities: service= takes the SRV records of the lowest
// priority number as the servers, the others as backups, each with its
// port; the backups take over when the primaries fail.
func TestResolveSRVPriorities(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 3, backend.Echo, nil)
	port := func(i int) uint16 {
		_, p, _ := net.SplitHostPort(ups[i].Addr())
		var n uint16
		fmt.Sscan(p, &n)
		return n
	}
	d := startDNS(t)
	d.SetSRV("_tls._tcp.svc.test",
		dnstest.SRV{Priority: 1, Weight: 2, Port: port(0), Target: "a.test"},
		dnstest.SRV{Priority: 1, Weight: 1, Port: port(1), Target: "b.test"},
		dnstest.SRV{Priority: 2, Weight: 1, Port: port(2), Target: "c.test"},
	)
	for _, n := range []string{"a.test", "b.test", "c.test"} {
		d.SetAddrs(n, "127.0.0.1")
	}
	tb := startEngine(t, dir, resolveConf(d.Addr(), " ipv6=off", "2s", "svc.test service=tls resolve"))
	waitPeers(t, tb, ups[0].Addr(), ups[1].Addr(), ups[2].Addr())
	for _, p := range tb.eng.plan.Load().groups["backend"].Peers() {
		if want := p.String() == ups[2].Addr(); p.Backup != want {
			t.Errorf("peer %s backup %v, want %v", p, p.Backup, want)
		}
	}
	for i := range 3 {
		if _, err := echoOnce(tb.addr, []byte("x"), 5*time.Second); err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
	}
	if a, b, c := ups[0].Stats().Accepted, ups[1].Stats().Accepted, ups[2].Stats().Accepted; a != 2 || b != 1 || c != 0 {
		t.Errorf("accepted %d, %d, %d; want 2, 1, 0 (SRV weights 2 and 1, the backup unused)", a, b, c)
	}
	ups[0].Close()
	ups[1].Close()
	if _, err := echoOnce(tb.addr, []byte("backup"), 5*time.Second); err != nil {
		t.Fatalf("with the primaries down: %v", err)
	}
	if c := ups[2].Stats().Accepted; c != 1 {
		t.Errorf("the backup accepted %d", c)
	}
}

// TestResolveIPv6Off: ipv6=off asks for A records only.
func TestResolveIPv6Off(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	up := startUpstreamAt(t, set, "127.0.0.2:0")
	_, port, _ := net.SplitHostPort(up.Addr())
	d := startDNS(t)
	d.SetAddrs("app.test", "127.0.0.2", "::1")
	d.SetAddrs("v6.test", "::1")
	tb := startEngine(t, dir, resolveConf(d.Addr(), " ipv6=off", "2s", "app.test:"+port+" resolve", "v6.test:"+port+" resolve"))
	waitPeers(t, tb, "127.0.0.2:"+port)
	testutil.WaitFor(t, "v6.test's NXDOMAIN", 5*time.Second, func() bool {
		return strings.Contains(tb.logText(), "v6.test could not be resolved (3: Host not found)")
	})
	if got := len(tb.eng.plan.Load().groups["backend"].Peers()); got != 1 {
		t.Errorf("%d peers with ipv6=off", got)
	}
}

// TestResolveReload: a reload that keeps the upstream keeps its resolved
// addresses and peers, and the new plan's resolver goes on following DNS;
// a reload that changes the block starts from the addresses resolved.
func TestResolveReload(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	_, _, port := startUpstreamPair(t, set)
	d := startDNS(t)
	d.SetAddrs("app.test", "127.0.0.2")
	text := resolveConf(d.Addr(), "", "2s", "app.test:"+port+" resolve")
	tb := startEngine(t, dir, text)
	waitPeers(t, tb, "127.0.0.2:"+port)
	before := tb.eng.plan.Load().groups["backend"].Peers()[0]
	old := tb.eng.plan.Load()
	if err := tb.reload(text + "\n# changed\n"); err != nil {
		t.Fatal(err)
	}
	if tb.eng.plan.Load() == old {
		t.Fatal("no new plan")
	}
	if p := tb.eng.plan.Load().groups["backend"].Peers(); len(p) != 1 || p[0] != before {
		t.Errorf("after the reload: peers %v, want the same peer", p)
	}
	d.SetAddrs("app.test", "127.0.0.3")
	waitPeers(t, tb, "127.0.0.3:"+port)
	if _, err := echoOnce(tb.addr, []byte("x"), 5*time.Second); err != nil {
		t.Fatal(err)
	}

	// A changed block: the new group starts with the old one's
	// addresses, with no DNS answer (the name server is silent now).
	d.SetMode(dnstest.Drop)
	if err := tb.reload(resolveConf(d.Addr(), "", "2s", "app.test:"+port+" resolve max_conns=100")); err != nil {
		t.Fatal(err)
	}
	g := tb.eng.plan.Load().groups["backend"]
	if p := g.Peers(); len(p) != 1 || p[0].String() != "127.0.0.3:"+port || p[0].MaxConns != 100 {
		t.Fatalf("after changing the block: peers %v", p)
	}
	if _, err := echoOnce(tb.addr, []byte("y"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// FuzzNameServerAddr: any resolver address either fails or gives a host
// and a port; the port is 53 when none is written.
func FuzzNameServerAddr(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "127.0.0.1:5353", "[::1]", "[::1]:53", "ns.example.com:54", "[", ":", "a:b:c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, a string) {
		host, port, err := nameServerAddr(a)
		if err != nil {
			return
		}
		if host == "" || port == 0 {
			t.Fatalf("nameServerAddr(%q) = %q, %d", a, host, port)
		}
		if !strings.Contains(a, ":") && port != 53 {
			t.Fatalf("nameServerAddr(%q): port %d without one written", a, port)
		}
	})
}
