package engine

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/engine/errlog"
	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
	"github.com/tlsrelay/tlsrelay/pool"
)

// shortDir is a directory for unix domain sockets whose paths fit
// sun_path (t.TempDir() paths can be too long), removed when the test
// ends.
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "tru")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// unixUpstream starts a TLS upstream on a unix domain socket at path,
// requiring the set's client certificate.
func unixUpstream(t *testing.T, set *pki.Set, path string, mode backend.Mode) *backend.Server {
	t.Helper()
	s, err := backend.Start(backend.Config{Addr: "unix:" + path, TLS: set.ServerConfig(), Mode: mode})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// echoUnix is echoOnce over a unix domain socket.
func echoUnix(path string, payload []byte, timeout time.Duration) ([]byte, error) {
	c, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(payload); err != nil {
		return nil, fmt.Errorf("writing: %w", err)
	}
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(c, got); err != nil {
		return got, fmt.Errorf("reading echo: %w", err)
	}
	return got, nil
}

// stopEngine stops tb's engine and waits for Serve to return, leaving
// the result for the test's cleanup.
func stopEngine(t *testing.T, tb *testbed) {
	t.Helper()
	tb.stop()
	select {
	case err := <-tb.done:
		tb.done <- err
	case <-time.After(30 * time.Second):
		t.Fatal("engine did not stop within 30s")
	}
}

// readLines waits for n lines in the file at path and returns them.
func readLines(t *testing.T, path string, n int) []string {
	t.Helper()
	testutil.WaitFor(t, fmt.Sprintf("%d lines in %s", n, path), 10*time.Second, func() bool {
		b, _ := os.ReadFile(path)
		return strings.Count(string(b), "\n") >= n
	})
	b, _ := os.ReadFile(path)
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

// TestUnixUpstreamTLS: a TCP client through tlsrelay to a TLS upstream on
// a unix domain socket that requires a client certificate; the
// certificate is verified against proxy_ssl_name, which is also the SNI;
// the second session resumes; $upstream_addr is "unix:PATH". Without
// proxy_ssl_name no SNI is sent (a path is no host name).
func TestUnixUpstreamTLS(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	sd := shortDir(t)
	up := unixUpstream(t, set, filepath.Join(sd, "up.sock"), backend.Echo)
	noName := unixUpstream(t, set, filepath.Join(sd, "noname.sock"), backend.Echo)
	logPath := filepath.Join(dir, "access.log")
	text := "stream {\nlog_format u '$remote_addr $server_addr $status up=$upstream_addr tls=$upstream_ssl_session_reused';\n" +
		upstreamBlock("backend", []*backend.Server{up}) +
		fmt.Sprintf(guideServer, "proxy_ssl_name localhost; proxy_ssl_server_name on; access_log "+logPath+" u;") +
		"server { listen 127.0.0.1:0; proxy_pass " + noName.Addr() + "; proxy_ssl on; proxy_ssl_server_name on;\n" +
		"proxy_ssl_certificate {{dir}}/client.pem; proxy_ssl_certificate_key {{dir}}/client.key; }\n}\n"
	tb := startEngine(t, dir, text)
	for i := 0; i < 2; i++ {
		got, err := echoOnce(tb.addr, []byte("over unix"), 10*time.Second)
		if err != nil || string(got) != "over unix" {
			t.Fatalf("session %d: %q, %v", i, got, err)
		}
	}
	lines := readLines(t, logPath, 2)
	want := "127.0.0.1 127.0.0.1 200 up=" + up.Addr() + " tls="
	if lines[0] != want+"." || lines[1] != want+"r" {
		t.Errorf("access log:\n%s\nwant %q then resumed", strings.Join(lines, "\n"), want)
	}
	if st := up.Stats(); st.Handshakes != 2 || st.Resumed != 1 {
		t.Errorf("upstream: %d handshakes, %d resumed; want 2, 1", st.Handshakes, st.Resumed)
	}
	if n := up.Subjects()["tlsrelay client"]; n != 2 {
		t.Errorf("client certificate seen %d times: %v", n, up.Subjects())
	}
	if sni := up.ServerNames(); sni["localhost"] != 2 {
		t.Errorf("SNI: %v, want localhost twice", sni)
	}
	second := tb.eng.Addrs()[1].String()
	if got, err := echoOnce(second, []byte("x"), 10*time.Second); err != nil || string(got) != "x" {
		t.Fatalf("unnamed unix upstream: %q, %v", got, err)
	}
	if sni := noName.ServerNames(); sni[""] != 1 || len(sni) != 1 {
		t.Errorf("SNI without proxy_ssl_name: %v, want none", sni)
	}
}

// TestUnixUpstreamVerifyNeedsName: verifying a unix domain socket
// upstream's certificate without proxy_ssl_name is refused at load, at
// proxy_ssl_verify's line.
func TestUnixUpstreamVerifyNeedsName(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "t.conf")
	text := "stream { server { listen 127.0.0.1:1; proxy_pass unix:/run/x.sock; proxy_ssl on;\nproxy_ssl_verify on;\nproxy_ssl_trusted_certificate " + filepath.Join(dir, "ca.pem") + "; } }\n"
	set, err := pki.NewSet(pki.ECDSAP256, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := set.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := conf.Load(path, conf.LoadOptions{Prefix: dir})
	if err != nil {
		t.Fatal(err)
	}
	_, err = build(cfg, false, nil)
	want := `"proxy_ssl_verify on" needs "proxy_ssl_name" for the unix domain socket upstream "unix:/run/x.sock": a path is no host name to verify the certificate against in ` + path + ":2"
	if err == nil || !strings.HasSuffix(err.Error(), want) {
		t.Fatalf("got %v\nwant ...%s", err, want)
	}
	cfg, _, err = conf.Parse(path, []byte(strings.Replace(text, "proxy_ssl_verify on;", "proxy_ssl_verify on; proxy_ssl_name localhost;", 1)), conf.LoadOptions{Prefix: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := build(cfg, false, nil); err != nil {
		t.Fatalf("with proxy_ssl_name: %v", err)
	}
}

// TestUnixListen: clients on a unix domain socket (listen unix:PATH)
// reach a TCP TLS upstream; the socket file is mode 0666 (as NGINX's);
// $remote_addr is "unix:", $server_addr "unix:PATH", the ports empty;
// hash $remote_addr sends every unix client to the same peer; the file
// is removed when the engine stops.
func TestUnixListen(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 2, backend.Echo, nil)
	sock := filepath.Join(shortDir(t), "in.sock")
	logPath := filepath.Join(dir, "access.log")
	srv := strings.Replace(fmt.Sprintf(guideServer, "access_log "+logPath+" u;"), "listen     127.0.0.1:0;", "listen unix:"+sock+";", 1)
	text := "stream {\nlog_format u '$remote_addr|$remote_port|$server_addr|$server_port|$status';\n" +
		strings.Replace(upstreamBlock("backend", ups), "{\n", "{\n    hash $remote_addr consistent;\n", 1) + srv + "}\n"
	tb := startEngine(t, dir, text)
	if tb.addr != sock {
		t.Fatalf("listener address %q, want %q", tb.addr, sock)
	}
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o666 {
		t.Errorf("socket file mode %v, want a socket with 0666", fi.Mode())
	}
	const n = 4
	for i := 0; i < n; i++ {
		got, err := echoUnix(sock, []byte("from unix"), 10*time.Second)
		if err != nil || string(got) != "from unix" {
			t.Fatalf("client %d: %q, %v", i, got, err)
		}
	}
	for _, l := range readLines(t, logPath, n) {
		if want := "unix:||unix:" + sock + "||200"; l != want {
			t.Errorf("access log line %q, want %q", l, want)
		}
	}
	a, b := ups[0].Stats().Accepted, ups[1].Stats().Accepted
	if a+b != n || (a != 0 && b != 0) {
		t.Errorf("hash $remote_addr spread unix clients %d/%d, want all on one peer", a, b)
	}
	stopEngine(t, tb)
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after the engine stopped: %v", err)
	}
}

// serveOnce loads text and runs Serve until it returns or the engine is
// ready (then it is stopped); it returns Serve's error and the error log.
func serveOnce(t *testing.T, dir, text string) (string, error) {
	t.Helper()
	path := filepath.Join(dir, "tlsrelay.conf")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := conf.Load(path, conf.LoadOptions{Prefix: dir})
	if err != nil {
		t.Fatal(err)
	}
	log := &testutil.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e, err := New(cfg, Options{Log: errlog.New(log, errlog.LevelInfo), Ready: func([]net.Addr) { cancel() }})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.Serve(ctx) }()
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return")
	}
	return log.String(), err
}

// TestUnixListenStale: a socket file no process accepts on (left by a
// killed process) is removed at start, with a notice; a live socket or a
// regular file at the path is left alone and bind() fails as NGINX's
// does.
func TestUnixListenStale(t *testing.T) {
	sd := shortDir(t)
	dir := t.TempDir()
	conf := func(sock string) string {
		return "stream { server { listen unix:" + sock + "; proxy_pass 127.0.0.1:1; } }\n"
	}

	stale := filepath.Join(sd, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Lstat(stale); err != nil {
		t.Fatalf("the stale socket is not there: %v", err)
	}
	log, err := serveOnce(t, dir, conf(stale))
	if err != nil {
		t.Fatalf("serving over a stale socket: %v\n%s", err, log)
	}
	if !strings.Contains(log, "removed the stale socket "+stale+": no process accepted on it") {
		t.Errorf("no notice of the stale socket:\n%s", log)
	}
	if _, err := os.Lstat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after the engine stopped: %v", err)
	}

	live := filepath.Join(sd, "live.sock")
	ln, err = net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = serveOnce(t, dir, conf(live))
	if err == nil || !strings.Contains(err.Error(), "bind() to unix:"+live+" failed (98: Address already in use)") {
		t.Errorf("over a live socket: %v", err)
	}
	if c, err := net.Dial("unix", live); err != nil {
		t.Errorf("the live socket was disturbed: %v", err)
	} else {
		c.Close()
	}

	file := filepath.Join(sd, "file")
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = serveOnce(t, dir, conf(file))
	if err == nil || !strings.Contains(err.Error(), "bind() to unix:"+file+" failed (98: Address already in use)") {
		t.Errorf("over a regular file: %v", err)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep" {
		t.Errorf("the regular file was touched: %q, %v", b, err)
	}
}

// inode returns the inode of the file at path.
func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// TestUnixListenReload: a reload that keeps the listen line keeps the
// socket (same file): a client connected before goes on, new clients are
// accepted. A reload that drops the line deletes the file with NGINX's
// warning.
func TestUnixListenReload(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	sock := filepath.Join(shortDir(t), "in.sock")
	unixSrv := strings.Replace(fmt.Sprintf(guideServer, ""), "listen     127.0.0.1:0;", "listen unix:"+sock+";", 1)
	tcpSrv := fmt.Sprintf(guideServer, "")
	text := "stream {\n" + upstreamBlock("backend", ups) + unixSrv + "}\n"
	tb := startEngine(t, dir, text)
	ino := inode(t, sock)
	c, err := net.DialTimeout("unix", sock, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	held := &heldSession{c: c}
	if err := held.echo(64); err != nil {
		t.Fatal(err)
	}
	if err := tb.reload("stream {\n" + upstreamBlock("backend", ups) + unixSrv + tcpSrv + "}\n"); err != nil {
		t.Fatal(err)
	}
	if got := inode(t, sock); got != ino {
		t.Errorf("the socket file changed across the reload: inode %d, was %d", got, ino)
	}
	if err := held.echo(64 << 10); err != nil {
		t.Errorf("the session from before the reload: %v", err)
	}
	if got, err := echoUnix(sock, []byte("after"), 10*time.Second); err != nil || string(got) != "after" {
		t.Errorf("a client after the reload: %q, %v", got, err)
	}
	if err := tb.reload("stream {\n" + upstreamBlock("backend", ups) + tcpSrv + "}\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after a reload dropped its listen line: %v", err)
	}
	if !regexp.MustCompile(`\[warn\] \d+#\d+: deleting socket ` + regexp.QuoteMeta(sock) + "\n").MatchString(tb.logText()) {
		t.Errorf("no warning for the deleted socket:\n%s", tb.logText())
	}
	if err := held.echo(64); err != nil {
		t.Errorf("the session after its listener was dropped: %v", err)
	}
}

// TestUnixAccessRules: allow unix: and deny unix: match unix domain
// clients (and only them); the denial is logged with client "unix:".
func TestUnixAccessRules(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	sd := shortDir(t)
	denied, allowed := filepath.Join(sd, "d.sock"), filepath.Join(sd, "a.sock")
	logPath := filepath.Join(dir, "access.log")
	onUnix := func(sock, rules string) string {
		return strings.Replace(fmt.Sprintf(guideServer, "access_log "+logPath+" st; "+rules), "listen     127.0.0.1:0;", "listen unix:"+sock+";", 1)
	}
	text := "stream {\nlog_format st '$status $remote_addr $server_addr';\n" + upstreamBlock("backend", ups) +
		onUnix(denied, "deny unix:; allow all;") + onUnix(allowed, "allow unix:; deny all;") +
		fmt.Sprintf(guideServer, "access_log "+logPath+" st; deny unix:;") + "}\n"
	tb := startEngine(t, dir, text)
	tcp := tb.eng.Addrs()[2].String()
	c, err := net.DialTimeout("unix", denied, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("x"))
	if n, _ := io.Copy(io.Discard, c); n != 0 {
		t.Errorf("a denied client got %d bytes", n)
	}
	c.Close()
	if got, err := echoUnix(allowed, []byte("welcome"), 10*time.Second); err != nil || string(got) != "welcome" {
		t.Fatalf("allowed unix client: %q, %v", got, err)
	}
	if got, err := echoOnce(tcp, []byte("tcp"), 10*time.Second); err != nil || string(got) != "tcp" {
		t.Fatalf("TCP client past deny unix:: %q, %v", got, err)
	}
	b := strings.Join(readLines(t, logPath, 3), "\n") + "\n"
	for _, want := range []string{"403 unix: unix:" + denied + "\n", "200 unix: unix:" + allowed + "\n", "200 127.0.0.1 127.0.0.1\n"} {
		if !strings.Contains(b, want) {
			t.Errorf("access log lacks %q:\n%s", want, b)
		}
	}
	if !strings.Contains(tb.logText(), "access forbidden by rule, client: unix:, server: unix:"+denied) {
		t.Errorf("error log:\n%s", tb.logText())
	}
	if n := ups[0].Stats().Accepted; n != 2 {
		t.Errorf("the upstream accepted %d connections, want 2", n)
	}
}

// plainUnixUpstream is plainUpstream on a unix domain socket at path.
func plainUnixUpstream(t *testing.T, path string) <-chan string {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	return serveLines(t, ln)
}

// TestUnixProxyProtocol: PROXY headers in and out over unix domain
// sockets. From a unix listener with set_real_ip_from unix:, the header's
// client is $remote_addr; without it $remote_addr stays "unix:". To a
// unix upstream, a unix client is "PROXY UNKNOWN" (as NGINX sends), a TCP
// client its addresses.
func TestUnixProxyProtocol(t *testing.T) {
	sd := shortDir(t)
	dir := t.TempDir()
	upPath := filepath.Join(sd, "up.sock")
	got := plainUnixUpstream(t, upPath)
	trusted, plain := filepath.Join(sd, "t.sock"), filepath.Join(sd, "p.sock")
	logPath := filepath.Join(dir, "access.log")
	text := "stream {\nlog_format pp '$remote_addr $proxy_protocol_addr';\n" +
		"server { listen unix:" + trusted + " proxy_protocol; set_real_ip_from unix:; proxy_pass unix:" + upPath + "; proxy_protocol on; access_log " + logPath + " pp; }\n" +
		"server { listen unix:" + plain + " proxy_protocol; proxy_pass unix:" + upPath + "; proxy_protocol on; access_log " + logPath + " pp; }\n" +
		"server { listen 127.0.0.1:0; proxy_pass unix:" + upPath + "; proxy_protocol on; access_log " + logPath + " pp; }\n}\n"
	tb := startEngine(t, dir, text)
	tcp := tb.eng.Addrs()[2].(*net.TCPAddr)
	send := func(network, addr string, header, body, want string) {
		t.Helper()
		c, err := net.Dial(network, addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if la, ok := c.LocalAddr().(*net.TCPAddr); ok {
			want = fmt.Sprintf(want, la.Port)
		}
		c.Write([]byte(header + body))
		select {
		case s := <-got:
			if s != want {
				t.Errorf("upstream got %q, want %q", s, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("nothing reached the upstream")
		}
	}
	hdr := "PROXY TCP4 203.0.113.7 198.51.100.1 5555 443\r\n"
	// The original client is TCP, the server end a unix socket: no
	// family covers both, so the header sent on is UNKNOWN.
	send("unix", trusted, hdr, "trusted\n", "PROXY UNKNOWN\r\ntrusted\n")
	send("unix", plain, hdr, "plain\n", "PROXY UNKNOWN\r\nplain\n")
	send("tcp", tcp.String(), "", "tcp\n", fmt.Sprintf("PROXY TCP4 127.0.0.1 127.0.0.1 %%d %d\r\ntcp\n", tcp.Port))
	b := strings.Join(readLines(t, logPath, 3), "\n") + "\n"
	for _, want := range []string{"203.0.113.7 203.0.113.7\n", "unix: 203.0.113.7\n", "127.0.0.1 \n"} {
		if !strings.Contains(b, want) {
			t.Errorf("access log lacks %q:\n%s", want, b)
		}
	}
	if !strings.Contains(tb.logText(), "proxy unix: connected to unix:"+upPath) {
		t.Errorf("no connect line for the unix upstream:\n%s", tb.logText())
	}
}

// TestUnixHealthCheck: health checks probe unix domain socket upstreams:
// a path nobody listens on is out, the live one stays in and takes the
// clients.
func TestUnixHealthCheck(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	sd := shortDir(t)
	good := unixUpstream(t, set, filepath.Join(sd, "good.sock"), backend.Echo)
	dead := "unix:" + filepath.Join(sd, "dead.sock")
	tb := startHealthEngine(t, dir, healthConf([]string{dead, good.Addr()}, "",
		"proxy_ssl_name localhost; health_check interval=100ms;"))
	var bad, gp *pool.Peer
	for _, p := range tb.eng.plan.Load().groups["backend"].Peers() {
		switch p.String() {
		case dead:
			bad = p
		case good.Addr():
			gp = p
		}
	}
	if bad == nil || gp == nil {
		t.Fatalf("peers %v", tb.eng.plan.Load().groups["backend"].Peers())
	}
	testutil.WaitFor(t, "the dead unix peer out", 5*time.Second, bad.Unhealthy)
	testutil.WaitFor(t, "two probes of the good peer", 5*time.Second, func() bool { ok, _ := gp.HealthChecks(); return ok >= 2 })
	if gp.Unhealthy() {
		t.Fatal("the live unix peer is unhealthy")
	}
	for i := range 4 {
		if _, err := echoOnce(tb.addr, []byte("hi"), 10*time.Second); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
	}
	if n := tb.eng.Metrics().Snapshot().FailedAttempts; n != 0 {
		t.Fatalf("%d failed attempts: a client reached the dead peer", n)
	}
	testutil.WaitFor(t, "the state change in the log", 5*time.Second, func() bool {
		return strings.Contains(tb.logText(), "peer "+dead+` of upstream "backend" is unhealthy`)
	})
}

// TestUnixListenParams: the listen parameters that are TCP's are refused
// on a unix domain socket with the directive's position; the others
// load.
func TestUnixListenParams(t *testing.T) {
	tests := []struct{ params, want string }{
		{"", ""},
		{"backlog=16 rcvbuf=64k sndbuf=64k proxy_protocol bind", ""},
		{"so_keepalive=off", ""},
		{"reuseport", `"listen unix:/run/t.sock ... reuseport": reuseport is for TCP sockets, not unix domain sockets`},
		{"deferred", `"listen unix:/run/t.sock ... deferred": deferred is for TCP sockets, not unix domain sockets`},
		{"fastopen=16", `"listen unix:/run/t.sock ... fastopen": fastopen is for TCP sockets, not unix domain sockets`},
		{"so_keepalive=on", `"listen unix:/run/t.sock ... so_keepalive": so_keepalive is for TCP sockets, not unix domain sockets`},
		{"so_keepalive=30m::10", `"listen unix:/run/t.sock ... so_keepalive": so_keepalive is for TCP sockets, not unix domain sockets`},
	}
	for _, tt := range tests {
		t.Run(tt.params, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "t.conf")
			text := "stream { server {\nlisten unix:/run/t.sock " + tt.params + "; proxy_pass 127.0.0.1:1; } }\n"
			cfg, _, err := conf.Parse(path, []byte(text), conf.LoadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			_, err = build(cfg, false, nil)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && (err == nil || !strings.HasSuffix(err.Error(), tt.want+" in "+path+":2")):
				t.Fatalf("got %v\nwant %s in %s:2", err, tt.want, path)
			}
		})
	}
}

// TestUnixUpstreamNoLinger: a session to a unix domain socket upstream
// ends as soon as what the client sent is in the socket, even when the
// upstream has not read it: closing a unix socket loses nothing (what was
// sent stays queued for the peer), so there is no lingering as for TCP.
// The upstream then reads every byte.
func TestUnixUpstreamNoLinger(t *testing.T) {
	sd := shortDir(t)
	dir := t.TempDir()
	up := filepath.Join(sd, "up.sock")
	ln, err := net.Listen("unix", up)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	read := make(chan struct{})
	n := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			n <- -1
			return
		}
		defer c.Close()
		<-read
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		k, _ := io.Copy(io.Discard, c)
		n <- k
	}()
	logPath := filepath.Join(dir, "access.log")
	tb := startEngine(t, dir, "stream {\nlog_format u '$status $bytes_received $upstream_bytes_sent';\n"+
		"server { listen 127.0.0.1:0; proxy_pass unix:"+up+"; access_log "+logPath+" u; }\n}\n")
	const size = 32 << 10
	c, err := net.Dial("tcp", tb.addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	// Well before lingerTimeout, which a lingering session would wait
	// out (the upstream neither reads nor closes until told to).
	testutil.WaitFor(t, "the session's access-log line", lingerTimeout/2, func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), "\n")
	})
	close(read)
	if got := <-n; got != size {
		t.Fatalf("the upstream read %d bytes, want %d", got, size)
	}
	if l := readLines(t, logPath, 1)[0]; l != fmt.Sprintf("200 %d %d", size, size) {
		t.Errorf("access log %q", l)
	}
}

// TestUnixHalfClose: proxy_half_close on between a unix client and a TLS
// upstream on a unix socket: the client writes, ends its write side, and
// reads back the echo and what the upstream wrote after it saw the end.
func TestUnixHalfClose(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	sd := shortDir(t)
	upPath, sock := filepath.Join(sd, "up.sock"), filepath.Join(sd, "in.sock")
	ln, err := net.Listen("unix", upPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	after := trailer(100 << 10)
	errs := make(chan error, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			errs <- err
			return
		}
		defer raw.Close()
		errs <- echoThen(after)(tls.Server(raw, set.ServerConfig()))
	}()
	srv := strings.Replace(fmt.Sprintf(guideServer, "proxy_half_close on; proxy_ssl_name localhost;"), "listen     127.0.0.1:0;", "listen unix:"+sock+";", 1)
	startEngine(t, dir, "stream {\nupstream backend { server unix:"+upPath+"; }\n"+srv+"}\n")
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	payload := trailer(256 << 10)
	werr := make(chan error, 1)
	go func() {
		if _, err := c.Write(payload); err != nil {
			werr <- err
			return
		}
		werr <- c.(*net.UnixConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading: %v (read %d bytes)", err, len(got))
	}
	if err := <-werr; err != nil {
		t.Fatalf("writing: %v", err)
	}
	if err := <-errs; err != nil {
		t.Fatalf("upstream: %v", err)
	}
	if want := append(append([]byte(nil), payload...), after...); !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, want %d (echo then %d after EOF)", len(got), len(want), len(after))
	}
}

// TestUnixAbstract: "unix:@name" is a socket in Linux's abstract
// namespace, for listen and upstreams: no file is made, chmod'ed or
// deleted.
func TestUnixAbstract(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	name := fmt.Sprintf("@tlsrelay-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	up := unixUpstream(t, set, name+"-up", backend.Echo)
	logPath := filepath.Join(dir, "access.log")
	srv := strings.Replace(fmt.Sprintf(guideServer, "proxy_ssl_name localhost; access_log "+logPath+" u;"), "listen     127.0.0.1:0;", "listen unix:"+name+";", 1)
	tb := startEngine(t, dir, "stream {\nlog_format u '$remote_addr $server_addr $upstream_addr';\n"+upstreamBlock("backend", []*backend.Server{up})+srv+"}\n")
	if got, err := echoUnix(name, []byte("abstract"), 10*time.Second); err != nil || string(got) != "abstract" {
		t.Fatalf("echo: %q, %v", got, err)
	}
	if l, want := readLines(t, logPath, 1)[0], "unix: unix:"+name+" unix:"+name+"-up"; l != want {
		t.Errorf("access log %q, want %q", l, want)
	}
	if _, err := os.Lstat(name); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a file %s: %v", name, err)
	}
	if err := tb.reload("stream {\n" + upstreamBlock("backend", []*backend.Server{up}) + fmt.Sprintf(guideServer, "proxy_ssl_name localhost;") + "}\n"); err != nil {
		t.Fatal(err)
	}
	if c, err := net.Dial("unix", name); err == nil {
		c.Close()
		t.Error("the abstract socket accepts after the reload dropped it")
	}
}

// TestUnixFullDuplex: a client that writes 32 MiB while reading the echo
// back, through tlsrelay to an echo upstream over a unix domain socket
// (plain and TLS) and over TCP for comparison. Unix sockets' small
// buffers congest both directions at once, so both sockets get paused
// with output queued for each other: the session must re-adopt a paused
// socket to flush what waits for it, or it stalls for good.
func TestUnixFullDuplex(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	sd := shortDir(t)
	plainUp := filepath.Join(sd, "plain.sock")
	ln, err := net.Listen("unix", plainUp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	tcpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tcpLn.Close() })
	for _, l := range []net.Listener{ln, tcpLn} {
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() { io.Copy(c, c); c.Close() }()
			}
		}()
	}
	tlsUp := unixUpstream(t, set, filepath.Join(sd, "tls.sock"), backend.Echo)
	cliSock := filepath.Join(sd, "in.sock")
	text := "worker_processes 1;\nstream {\n" +
		"server { listen 127.0.0.1:0; proxy_pass unix:" + plainUp + "; }\n" +
		"server { listen 127.0.0.1:0; proxy_pass " + tcpLn.Addr().String() + "; }\n" +
		"server { listen unix:" + cliSock + "; proxy_pass unix:" + plainUp + "; }\n" +
		strings.Replace(upstreamBlock("backend", []*backend.Server{tlsUp}), "backend", "tlsup", 1) +
		strings.Replace(fmt.Sprintf(guideServer, "proxy_ssl_name localhost;"), "proxy_pass backend;", "proxy_pass tlsup;", 1) + "}\n"
	tb := startEngine(t, dir, text)
	addrs := tb.eng.Addrs()
	for _, tc := range []struct{ name, network, addr string }{
		{"tcp to unix", "tcp", addrs[0].String()},
		{"tcp to tcp", "tcp", addrs[1].String()},
		{"unix to unix", "unix", cliSock},
		{"tcp to unix TLS", "tcp", addrs[3].String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m0 := tb.eng.Metrics().Snapshot()
			defer func() {
				m := tb.eng.Metrics().Snapshot()
				t.Logf("%d stalls, %d pauses", m.Stalls-m0.Stalls, m.Pauses-m0.Pauses)
			}()
			c, err := net.Dial(tc.network, tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			const size = 32 << 20
			go func() {
				buf := make([]byte, 256<<10)
				for sent := 0; sent < size; sent += len(buf) {
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
			got := 0
			rb := make([]byte, 256<<10)
			for got < size {
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				n, err := c.Read(rb)
				if err != nil {
					t.Fatalf("after %d of %d bytes: %v", got, size, err)
				}
				got += n
			}
		})
	}
}
