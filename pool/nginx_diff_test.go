package pool

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// The differential test runs the same upstream groups through the real NGINX
// (stream module) and through Group, connects the same clients in the same
// order, and compares which backend served each connection.

// diffServer is one server line: a live backend (its index), or a dead
// address (connection refused) when dead is set.
type diffServer struct {
	backend int
	dead    bool
	weight  int
	params  string // "down", "backup", "max_fails=2" ...
}

type diffCase struct {
	name     string
	balancer string // the balancing directive, "" for round robin
	bc       BalancerConfig
	servers  []diffServer
	conns    int
	// hold keeps every connection open until the case ends, so that
	// active connection counts (least_conn, max_conns) build up.
	hold bool
	// clientIP gives the source address of connection i (for hash
	// $remote_addr); nil: 127.0.0.1.
	clientIP func(i int) string
}

// clientIPs spreads clients over 127.0.0.2..127.0.0.61.
func clientIPs(i int) string { return fmt.Sprintf("127.0.0.%d", 2+i%60) }

func TestNginxDifferential(t *testing.T) {
	testutil.NginxPath(t)
	testutil.NeedFile(t, testutil.NginxStreamModule, "libnginx-mod-stream")

	cases := []diffCase{
		{name: "wrr-5-1-1", servers: []diffServer{{0, false, 5, ""}, {1, false, 1, ""}, {2, false, 1, ""}}, conns: 35},
		{name: "wrr-3-2-1-1", servers: []diffServer{{0, false, 3, ""}, {1, false, 2, ""}, {2, false, 1, ""}, {3, false, 1, ""}}, conns: 42},
		{name: "wrr-equal", servers: []diffServer{{0, false, 1, ""}, {1, false, 1, ""}, {2, false, 1, ""}}, conns: 12},
		{name: "wrr-down", servers: []diffServer{{0, false, 2, ""}, {1, false, 3, "down"}, {2, false, 1, ""}, {3, false, 1, ""}}, conns: 24},
		{name: "wrr-dead", servers: []diffServer{{0, false, 2, ""}, {0, true, 3, "max_fails=2"}, {2, false, 1, ""}, {1, true, 1, ""}}, conns: 24},
		{name: "backup", servers: []diffServer{{0, true, 1, ""}, {1, true, 2, ""}, {2, false, 1, "backup"}, {3, false, 2, "backup"}}, conns: 12},
		{name: "least-conn", balancer: "least_conn;", bc: BalancerConfig{Method: MethodLeastConn},
			servers: []diffServer{{0, false, 3, ""}, {1, false, 1, ""}, {2, true, 2, ""}, {3, false, 1, ""}}, conns: 24},
		{name: "hash", balancer: "hash $remote_addr;", bc: BalancerConfig{Method: MethodHash, Key: "$remote_addr"},
			servers: []diffServer{{0, false, 1, ""}, {1, false, 2, ""}, {2, false, 1, ""}, {3, false, 3, ""}}, conns: 60, clientIP: clientIPs},
		{name: "hash-dead-down", balancer: "hash $remote_addr;", bc: BalancerConfig{Method: MethodHash, Key: "$remote_addr"},
			servers: []diffServer{{0, false, 1, ""}, {0, true, 2, ""}, {2, false, 1, "down"}, {3, false, 1, ""}, {4, false, 1, ""}}, conns: 60, clientIP: clientIPs},
		{name: "chash", balancer: "hash $remote_addr consistent;", bc: BalancerConfig{Method: MethodHash, Key: "$remote_addr", Consistent: true},
			servers: []diffServer{{0, false, 1, ""}, {1, false, 1, ""}, {2, false, 2, ""}, {3, false, 1, ""}}, conns: 60, clientIP: clientIPs},
		{name: "least-conn-held", balancer: "least_conn;", bc: BalancerConfig{Method: MethodLeastConn}, hold: true,
			servers: []diffServer{{0, false, 2, ""}, {1, false, 1, ""}, {2, true, 1, ""}, {3, false, 3, "max_conns=2"}, {4, false, 1, "max_conns=1"}}, conns: 20},
		{name: "wrr-max-conns-held", hold: true,
			servers: []diffServer{{0, false, 5, "max_conns=2"}, {1, false, 1, ""}, {2, false, 2, "max_conns=1"}}, conns: 12},
		{name: "backup-max-conns-held", hold: true,
			servers: []diffServer{{0, false, 1, "max_conns=2"}, {1, false, 2, "max_conns=1"}, {2, false, 1, "backup max_conns=3"}, {3, false, 1, "backup"}}, conns: 10},
		{name: "least-conn-backup-held", balancer: "least_conn;", bc: BalancerConfig{Method: MethodLeastConn}, hold: true,
			servers: []diffServer{{0, false, 1, "max_conns=1"}, {1, false, 1, "max_conns=2"}, {2, false, 1, "backup max_conns=2"}, {3, false, 2, "backup"}}, conns: 10},
		{name: "all-full-held", hold: true,
			servers: []diffServer{{0, false, 1, "max_conns=1"}, {1, true, 1, ""}, {2, false, 3, "max_conns=2"}}, conns: 6},
		{name: "chash-dead-down", balancer: "hash $remote_addr consistent;", bc: BalancerConfig{Method: MethodHash, Key: "$remote_addr", Consistent: true},
			servers: []diffServer{{0, false, 1, ""}, {0, true, 1, ""}, {2, false, 1, "down"}, {3, false, 2, ""}, {4, false, 1, ""}}, conns: 60, clientIP: clientIPs},
	}

	const nBackends = 5
	backends := make([]string, nBackends)
	holders := make([]string, nBackends)
	for i := range backends {
		backends[i] = startIndexBackend(t, i, false)
		holders[i] = startIndexBackend(t, i, true)
	}

	dir := t.TempDir()
	var conf strings.Builder
	conf.WriteString("stream {\n")
	probe := testutil.FreeAddr(t)
	fmt.Fprintf(&conf, "  server { listen %s; proxy_pass %s; }\n", probe, backends[0])

	groups := make([]*Group, len(cases))
	listen := make([]string, len(cases))
	for ci, c := range cases {
		gc := GroupConfig{Name: c.name, Balancer: c.bc}
		fmt.Fprintf(&conf, "  upstream %s {\n", c.name)
		if c.balancer != "" {
			fmt.Fprintf(&conf, "    %s\n", c.balancer)
		}
		for _, s := range c.servers {
			addr := backends[s.backend]
			if c.hold {
				addr = holders[s.backend]
			}
			if s.dead {
				addr = backend.RefusingAddr(t)
			}
			sc := NewServerConfig(addr)
			sc.Weight = s.weight
			for _, p := range strings.Fields(s.params) {
				switch {
				case p == "down":
					sc.Down = true
				case p == "backup":
					sc.Backup = true
				case strings.HasPrefix(p, "max_fails="):
					sc.MaxFails, _ = strconv.Atoi(strings.TrimPrefix(p, "max_fails="))
				case strings.HasPrefix(p, "max_conns="):
					sc.MaxConns, _ = strconv.Atoi(strings.TrimPrefix(p, "max_conns="))
				default:
					t.Fatalf("test bug: param %q", p)
				}
			}
			gc.Servers = append(gc.Servers, sc)
			fmt.Fprintf(&conf, "    server %s weight=%d %s;\n", addr, s.weight, s.params)
		}
		conf.WriteString("  }\n")
		listen[ci] = testutil.FreeAddr(t)
		fmt.Fprintf(&conf, "  server { listen %s; proxy_pass %s; proxy_connect_timeout 5s; }\n", listen[ci], c.name)
		g, err := NewGroup(gc, nil)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		groups[ci] = g
	}
	conf.WriteString("}\n")
	testutil.StartNginx(t, dir, testutil.NginxConf{Main: nginxMain, Events: "events { worker_connections 512; }", Stream: conf.String(), Probe: probe})

	for ci, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := groups[ci]
			now := time.Now()
			live := backends
			if c.hold {
				live = holders
			}
			var got, want []string
			for i := range c.conns {
				ip := "127.0.0.1"
				if c.clientIP != nil {
					ip = c.clientIP(i)
				}
				got = append(got, connectThrough(t, listen[ci], ip, c.hold))
				want = append(want, simulate(g, ip, live, now, c.hold))
			}
			t.Logf("nginx: %v", got)
			if !slices.Equal(got, want) {
				t.Errorf("nginx and Group disagree\nnginx: %v\nGroup: %v\nconfig:\n%s", got, want, conf.String())
			}
		})
	}
}

// simulate runs one client session through g the way the proxy does: try
// peers until one is alive (dead addresses are not among backends) or none
// is left. It returns the index of the backend that served, or "502". With
// hold, the session stays open.
func simulate(g *Group, clientIP string, backends []string, now time.Time, hold bool) string {
	s := g.NewSelection(clientIP, 0, now)
	for {
		p, err := s.Next(now)
		if err != nil {
			return "502"
		}
		idx := -1
		for i, b := range backends {
			if b == p.Name {
				idx = i
			}
		}
		if idx < 0 {
			s.Failed(p, now)
			if s.TriesLeft() == 0 {
				return "502"
			}
			continue
		}
		s.Connected(p, now)
		if !hold {
			s.Release(p)
		}
		return strconv.Itoa(idx)
	}
}

// connectThrough connects to addr from clientIP and returns what the backend
// behind it said (its index), or "502" when NGINX closed without data. With
// hold, it reads only the index and leaves the connection open until the
// test ends; otherwise it reads until the backend closed (and so NGINX ended
// the session).
func connectThrough(t *testing.T, addr, clientIP string, hold bool) string {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(clientIP)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("connecting to nginx from %s: %v", clientIP, err)
	}
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if hold {
		t.Cleanup(func() { c.Close() })
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil && len(line) == 0 {
			return "502"
		}
		return strings.TrimSpace(line)
	}
	defer c.Close()
	b, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		t.Fatalf("reading from nginx: %v", err)
	}
	if len(b) == 0 {
		return "502"
	}
	return string(bytes.TrimSpace(b))
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && strings.Contains(ne.Err.Error(), "reset")
}

// startIndexBackend serves i (as text) to every connection and closes it;
// with hold, it closes only when the other side has.
func startIndexBackend(t *testing.T, i int, hold bool) string {
	t.Helper()
	ln := testutil.Listen(t, "tcp", "127.0.0.1:0")
	testutil.Serve(t, ln, func(c net.Conn) {
		fmt.Fprintf(c, "%d\n", i)
		if hold {
			testutil.Discard(c)
		}
	})
	return ln.Addr().String()
}

// nginxMain runs NGINX as one process, so that one balancer sees every
// connection, as tlsrelay's group does in the test.
const nginxMain = "worker_processes 1;\nmaster_process off;"

// TestNginxDifferentialRecovery checks the ban, the probe after fail_timeout
// and the slow return of the effective weight against NGINX: a server that
// refuses connections is banned, comes back to life, and is probed once its
// fail_timeout (1s) is over. NGINX's clock has whole seconds, so the test
// waits 2.5s, long enough that both agree the ban is over.
func TestNginxDifferentialRecovery(t *testing.T) {
	testutil.NginxPath(t)
	testutil.NeedFile(t, testutil.NginxStreamModule, "libnginx-mod-stream")
	if testing.Short() {
		t.Skip("waits for a fail_timeout")
	}
	a := startIndexBackend(t, 0, false)
	b := startIndexBackend(t, 2, false)
	x := testutil.FreeAddr(t) // dead until phase 2
	dir := t.TempDir()
	probe, listen := testutil.FreeAddr(t), testutil.FreeAddr(t)
	stream := fmt.Sprintf(`stream {
  server { listen %s; proxy_pass %s; }
  upstream recovery {
    server %s weight=1;
    server %s weight=3 max_fails=1 fail_timeout=1s;
    server %s weight=1;
  }
  server { listen %s; proxy_pass recovery; }
}
`, probe, a, a, x, b, listen)
	g, err := NewGroup(GroupConfig{Name: "recovery", Servers: []ServerConfig{
		NewServerConfig(a),
		{Addr: x, Weight: 3, MaxFails: 1, FailTimeout: time.Second},
		NewServerConfig(b),
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	testutil.StartNginx(t, dir, testutil.NginxConf{Main: nginxMain, Events: "events { worker_connections 64; }", Stream: stream, Probe: probe})

	run := func(phase string, n int, live []string) {
		t.Helper()
		var got, want []string
		now := time.Now()
		for range n {
			got = append(got, connectThrough(t, listen, "127.0.0.1", false))
			want = append(want, simulate(g, "127.0.0.1", live, now, false))
		}
		t.Logf("%s: nginx %v", phase, got)
		if !slices.Equal(got, want) {
			t.Errorf("%s: nginx and Group disagree\nnginx: %v\nGroup: %v", phase, got, want)
		}
	}
	// x refuses: banned after its first failure.
	run("banned", 8, []string{a, "", b})

	ln, err := net.Listen("tcp", x)
	if err != nil {
		t.Fatalf("cannot take %s back for the revived server: %v", x, err)
	}
	testutil.Serve(t, ln, func(c net.Conn) { fmt.Fprintf(c, "1\n") })
	time.Sleep(2500 * time.Millisecond) // the fail_timeout under test
	run("revived", 16, []string{a, x, b})
}
