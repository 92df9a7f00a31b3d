package engine

import (
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/internal/dnstest"
	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// letterBackend listens on ip and greets each connection with its letter,
// then reads until the peer closes.
func letterBackend(t *testing.T, ip string, letter byte) string {
	t.Helper()
	ln := testutil.Listen(t, "tcp", ip+":0")
	testutil.Serve(t, ln, func(c net.Conn) {
		c.Write([]byte{letter})
		io.Copy(io.Discard, c)
	})
	return ln.Addr().String()
}

// reply opens a session to addr, sends send, and returns what comes back
// before the session ends, or its first n bytes (n > 0); "" when it is
// closed without a byte.
func reply(t *testing.T, addr, send string, n int) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, send)
	var r io.Reader = c
	if n > 0 {
		r = io.LimitReader(c, int64(n))
	}
	b, _ := io.ReadAll(r)
	return string(b)
}

func portOfAddr(a string) string {
	_, p, _ := net.SplitHostPort(a)
	return p
}

// TestProxyPassVariablesNginxDiff runs nginx-tests' stream_proxy_complex.t
// and more through NGINX and through tlsrelay: `proxy_pass $server_port`
// names upstream blocks named after the listeners' ports (a group of two
// keeps its round robin across sessions); `$server_addr:PORT` is an
// address, which is also a server of a block (NGINX looks the value's
// host and port up among the implicit groups only); a value without a
// port, and a name without a resolver, end the session with 500 and
// NGINX's error line; a map's value names a block, without regard to
// case. The greetings, the statuses and the error lines must match.
func TestProxyPassVariablesNginxDiff(t *testing.T) {
	testutil.NginxPath(t)
	type outcome struct {
		greetings []string
		statuses  []string // "listener status", sorted, without repeats
		errors    string
	}
	run := func(proxy string) outcome {
		l := make([]string, 7)
		for i := range l {
			l[i] = testutil.FreeAddr(t)
		}
		ip2, _, _ := net.SplitHostPort(l[2])
		a := letterBackend(t, "127.0.0.1", 'a')
		b := letterBackend(t, "127.0.0.1", 'b')
		c := letterBackend(t, ip2, 'c') // $server_addr of l[2] reaches it
		dir := t.TempDir()
		stream := fmt.Sprintf(`stream {
log_format st "$server_port $status";
access_log %s/access.log st;
upstream %s { server %s; }
upstream %s { server %s; server %s; }
upstream Back { server %s; }
map $server_port $mapped { %s %s; default BACK; }
server { listen %s; listen %s; proxy_pass $server_port; }
server { listen %s; proxy_pass $server_addr:%s; }
server { listen %s; proxy_pass $server_addr; }
server { listen %s; proxy_pass name.invalid:$server_port; }
server { listen %s; listen %s; proxy_pass $mapped; }
}
`, dir, portOfAddr(l[0]), a, portOfAddr(l[1]), b, c, a,
			portOfAddr(l[5]), portOfAddr(l[1]),
			l[0], l[1], l[2], portOfAddr(c), l[3], l[4], l[5], l[6])
		var errText func() string
		sessions := 9
		if proxy == "nginx" {
			n := testutil.StartNginx(t, dir, testutil.NginxConf{Main: "worker_processes 1;", Stream: stream, Probe: l[0]})
			errText = n.Log
			sessions++ // the probe's
		} else {
			tb := startEngine(t, dir, stream)
			errText = tb.logText
		}
		var o outcome
		for _, i := range []int{0, 0, 1, 1, 2, 3, 4, 5, 6} {
			o.greetings = append(o.greetings, fmt.Sprintf("%d:%s", i, reply(t, l[i], "", 1)))
		}
		lines := readLines(t, filepath.Join(dir, "access.log"), sessions)
		index := map[string]int{}
		for i, a := range l {
			index[portOfAddr(a)] = i
		}
		for _, line := range lines {
			port, status, _ := strings.Cut(line, " ")
			o.statuses = append(o.statuses, fmt.Sprintf("%d %s", index[port], status))
		}
		slices.Sort(o.statuses)
		o.statuses = slices.Compact(o.statuses)
		ip3, _, _ := net.SplitHostPort(l[3])
		for _, want := range []string{fmt.Sprintf(`no port in upstream "%s"`, ip3), "no resolver defined to resolve name.invalid"} {
			if strings.Contains(errText(), want) {
				o.errors += strings.ReplaceAll(want, ip3, "IP") + "; "
			}
		}
		return o
	}
	want, have := run("nginx"), run("tlsrelay")
	if strings.Join(want.greetings, " ") != "0:a 0:a 1:b 1:c 2:c 3: 4: 5:b 6:a" {
		t.Errorf("NGINX's greetings %v are not what the test expects", want.greetings)
	}
	if !slices.Equal(have.greetings, want.greetings) {
		t.Errorf("greetings: tlsrelay %v, NGINX %v", have.greetings, want.greetings)
	}
	if !slices.Equal(have.statuses, want.statuses) {
		t.Errorf("statuses: tlsrelay %v, NGINX %v", have.statuses, want.statuses)
	}
	if have.errors != want.errors || strings.Count(want.errors, ";") != 2 {
		t.Errorf("error lines found: tlsrelay %q, NGINX %q; want both", have.errors, want.errors)
	}
}

// passTLSServer is the guide's TLS settings over proxy_pass pass, on
// listen.
func passTLSServer(listen, pass, extra string) string {
	return fmt.Sprintf(`server {
    listen %s;
    proxy_pass %s;
    proxy_ssl on;
    proxy_ssl_certificate {{dir}}/client.pem;
    proxy_ssl_certificate_key {{dir}}/client.key;
    proxy_ssl_trusted_certificate {{dir}}/ca.pem;
    proxy_ssl_verify on;
    proxy_ssl_session_reuse on;
    proxy_connect_timeout 2s;
    %s
}
`, listen, pass, extra)
}

// TestProxyPassVariablesResolve: a name a proxy_pass value gives is
// resolved with the resolver in force, on the dial worker: the answer is
// kept for its TTL (one query for many sessions, and the second session
// resumes its TLS session), then asked again; the name is what the
// certificate is verified against; a name that does not exist ends the
// session with 500 and NGINX's line. A name server that never answers
// holds only its own sessions: the loop goes on serving the others, and a
// client that leaves while its name is looked up ends its session at once.
func TestProxyPassVariablesResolve(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	_, up2, port := startUpstreamPair(t, set)
	d := startDNS(t)
	d.SetAddrs("localhost", "127.0.0.2")
	d.SetAddrs("wrong.test", "127.0.0.2")
	silent := startDNS(t)
	silent.SetMode(dnstest.Drop)

	l := make([]string, 4)
	for i := range l {
		l[i] = testutil.FreeAddr(t)
	}
	text := fmt.Sprintf(`worker_processes 1;
stream {
log_format p "$server_port $status $upstream_addr $upstream_ssl_session_reused";
access_log {{dir}}/pass.log p;
resolver %s valid=3s ipv6=off;
resolver_timeout 5s;
map $server_port $target {
    %s localhost:%s;
    %s wrong.test:%s;
    %s missing.test:%s;
    default slow.test:%s;
}
%s%s%s%s}
`, d.Addr(), portOfAddr(l[0]), port, portOfAddr(l[1]), port, portOfAddr(l[2]), port, port,
		passTLSServer(l[0], "$target", ""),
		passTLSServer(l[1], "$target", ""),
		passTLSServer(l[2], "$target", ""),
		passTLSServer(l[3], "$target", fmt.Sprintf("resolver %s; resolver_timeout 30s;", silent.Addr())))
	tb := startEngine(t, dir, text)
	logPath := filepath.Join(dir, "pass.log")

	// A name that never resolves holds its session on the dial worker...
	held, err := net.DialTimeout("tcp", l[3], 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	testutil.WaitFor(t, "the query for slow.test", 10*time.Second, func() bool {
		udp, _ := silent.Queries()
		return udp >= 1
	})

	// ...while the loop serves the others: two sessions to localhost, one
	// query, the second resumed.
	for i := range 2 {
		if got, err := echoOnce(l[0], []byte("hello"), 10*time.Second); err != nil || string(got) != "hello" {
			t.Fatalf("session %d through the resolved name: %q, %v", i, got, err)
		}
	}
	lines := readLines(t, logPath, 2)
	p0 := portOfAddr(l[0])
	if want := []string{p0 + " 200 127.0.0.2:" + port + " .", p0 + " 200 127.0.0.2:" + port + " r"}; !slices.Equal(lines, want) {
		t.Errorf("access log %q, want %q", lines, want)
	}
	if udp, tcp := d.Queries(); udp+tcp != 1 {
		t.Errorf("%d queries for two sessions to one name, want 1 (the answer is kept for its TTL)", udp+tcp)
	}

	// The client that waits for slow.test leaves: its session ends now,
	// not after resolver_timeout.
	held.Close()
	lines = readLines(t, logPath, 3)
	if !strings.HasPrefix(lines[2], portOfAddr(l[3])+" ") {
		t.Errorf("the session whose client left is logged as %q", lines[2])
	}

	// The name is what the certificate is checked against.
	if got := reply(t, l[1], "ping", 0); got != "" {
		t.Errorf("a session to wrong.test got %q through", got)
	}
	if want := `upstream certificate does not match "wrong.test"`; !strings.Contains(tb.logText(), want) {
		t.Errorf("the error log lacks %q", want)
	}
	// A name that does not exist: 500, NGINX's line.
	if got := reply(t, l[2], "ping", 0); got != "" {
		t.Errorf("a session to missing.test got %q through", got)
	}
	if want := "missing.test could not be resolved (3: Host not found)"; !strings.Contains(tb.logText(), want) {
		t.Errorf("the error log lacks %q", want)
	}
	lines = readLines(t, logPath, 5)
	if got, want := lines[3:], []string{portOfAddr(l[1]) + " 502 127.0.0.2:" + port + " ", portOfAddr(l[2]) + " 500  "}; !slices.Equal(got, want) {
		t.Errorf("access log %q, want %q", got, want)
	}

	// The metrics' counts: localhost asked once and then kept (once by
	// the loop, for the second session), missing.test failed.
	if st := tb.eng.names; st.OK.Load() != 2 || st.Cached.Load() < 1 || st.Failed.Load() != 1 {
		t.Errorf("lookups counted: ok %d, cached %d, failed %d; want 2 (localhost, wrong.test), at least 1, 1 (missing.test)",
			st.OK.Load(), st.Cached.Load(), st.Failed.Load())
	}

	// The answer expires (valid=3s): a new one is asked for, and new
	// sessions follow it.
	d.SetAddrs("localhost", "127.0.0.3")
	testutil.WaitFor(t, "a session to the new address", 10*time.Second, func() bool {
		if _, err := echoOnce(l[0], []byte("again"), 10*time.Second); err != nil {
			t.Fatal(err)
		}
		return up2.Stats().Accepted > 0
	})
}

// TestProxyPassVariablesRefused: what `-t` refuses of proxy_pass values,
// with the file and line: variables whose values are not known when the
// session starts.
func TestProxyPassVariablesRefused(t *testing.T) {
	for _, tc := range []struct{ name, text, want string }{
		{"upstream variable", "stream { server { listen 127.0.0.1:1; proxy_pass $upstream_addr; } }",
			`[emerg] proxy_pass with the "$upstream_addr" variable is not supported in t.conf:1`},
		{"session variable", "stream {\nserver { listen 127.0.0.1:1;\nproxy_pass 127.0.0.1:$bytes_received; } }",
			`[emerg] proxy_pass with the "$bytes_received" variable is not supported in t.conf:3`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _, err := conf.Parse("t.conf", []byte(tc.text), conf.LoadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			_, err = build(cfg, false, nil)
			if err == nil || err.Error() != tc.want {
				t.Errorf("build: %v, want %q", err, tc.want)
			}
		})
	}
	// The accepted forms build: key variables, maps, an upstream name.
	cfg, _, err := conf.Parse("t.conf", []byte("stream { map $remote_addr $u { default b; }\nupstream b { server 127.0.0.1:1; }\n"+
		"server { listen 127.0.0.1:1; proxy_pass $u; }\nserver { listen 127.0.0.1:2; proxy_pass $server_addr:$remote_port; } }"), conf.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := build(cfg, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.free()
}

// TestProxyPassVariablesReload: a reload that changes what a value names
// sends new sessions to the new group; an upstream block no literal
// proxy_pass names is built, and kept whole across the reload, as any
// group.
func TestProxyPassVariablesReload(t *testing.T) {
	a := letterBackend(t, "127.0.0.1", 'a')
	b := letterBackend(t, "127.0.0.1", 'b')
	text := func(target string) string {
		return fmt.Sprintf("stream {\nmap $server_port $t { default %s; }\nupstream u1 { server %s; }\nupstream u2 { server %s; }\n"+
			"server { listen 127.0.0.1:0; proxy_pass $t; }\n}\n", target, a, b)
	}
	tb := startEngine(t, t.TempDir(), text("u1"))
	if got := reply(t, tb.addr, "", 1); got != "a" {
		t.Fatalf("a session before the reload was greeted %q, want a (u1)", got)
	}
	u2 := tb.eng.plan.Load().groups["u2"]
	if u2 == nil {
		t.Fatal("upstream u2, named by no literal proxy_pass, was not built")
	}
	if err := tb.reload(text("u2")); err != nil {
		t.Fatal(err)
	}
	if got := reply(t, tb.addr, "", 1); got != "b" {
		t.Errorf("a session after the reload was greeted %q, want b (u2)", got)
	}
	if tb.eng.plan.Load().groups["u2"] != u2 {
		t.Error("the reload rebuilt upstream u2, which did not change")
	}
}
