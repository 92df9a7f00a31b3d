package engine

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// What new users met with etcd, slapd, HTTP/2 and HAProxy upstreams
// (issue 22): each is said where they look.

// builtinLogConf is the guide's server block over up, logging with the
// built-in format to dir/access.log, with extra directives.
func builtinLogConf(up, extra string) string {
	return closeOrderConf(up, "access_log {{dir}}/access.log tlsrelay;\n"+extra)
}

// TestOpenSSLGroupAndALPN: against `openssl s_server` that offers only
// X25519 and h2, the built-in log format shows the group, the ALPN
// protocol and a full TLS 1.3 handshake.
func TestOpenSSLGroupAndALPN(t *testing.T) {
	_, files, dir := newPKI(t, pki.ECDSAP256, 1)
	addr := startSServer(t, dir, files.CA, "-groups", "X25519", "-alpn", "h2")
	tb := startEngine(t, dir, strings.Replace(builtinLogConf(addr, "proxy_ssl_alpn h2;"), "worker_processes 2;", "worker_processes 2;\nmetrics_listen 127.0.0.1:60;", 1))
	c, err := net.Dial("tcp", tb.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("GET / HTTP/1.0\r\n\r\n")) // s_server -www answers and closes
	if b, err := io.ReadAll(c); err != nil || !strings.Contains(string(b), "200 ok") {
		t.Fatalf("s_server's answer: %q %v", b, err)
	}
	c.Close()
	lines := readLines(t, filepath.Join(dir, "access.log"), 1)
	for _, want := range []string{" 200 ", "tls=TLSv1.3 ", "handshake=full ", "group=X25519 ", "alpn=h2 ", "error= ", `close="upstream closed"`} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("access log %q lacks %q", lines[0], want)
		}
	}
	series := `tlsrelay_upstream_handshake_groups_total{group="X25519",peer="` + addr + `",upstream="backend"} 1`
	if m := scrape(t, tb.eng.MetricsAddr()); !strings.Contains(m, series) {
		t.Errorf("metrics lack %s:\n%s", series, grepLines(m, "handshake_groups"))
	}
}

// TestRefusedTCPConnectClass: a refused connect is class "connect", not
// "handshake": nothing handshook.
func TestRefusedTCPConnectClass(t *testing.T) {
	_, _, dir := newPKI(t, pki.ECDSAP256, 1)
	dead := backend.RefusingAddr(t)
	tb := startEngine(t, dir, builtinLogConf(dead, ""))
	c, err := net.Dial("tcp", tb.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.ReadAll(c)
	c.Close()
	line := readLines(t, filepath.Join(dir, "access.log"), 1)[0]
	if !strings.Contains(line, " 502 ") || !strings.Contains(line, "error=connect ") || !strings.Contains(line, "tls= handshake= ") {
		t.Errorf("access log %q, want 502 with error=connect and no TLS facts", line)
	}
}

// TestClosedAfterHandshake: a TLS 1.3 upstream that closes right after the
// handshake, before any data, with the client's bytes unanswered (as
// GnuTLS servers refuse a client certificate) is a failed attempt: 502,
// class closed_after_handshake, logged at error.
func TestClosedAfterHandshake(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ln := testutil.Listen(t, "tcp", testutil.FreeAddr(t))
	testutil.Serve(t, ln, func(c net.Conn) {
		tc := tls.Server(c, set.ServerConfig())
		if tc.Handshake() == nil {
			c.Close() // a FIN, no alert, no close_notify
		}
	})
	tb := startEngine(t, dir, builtinLogConf(ln.Addr().String(), ""))
	c, err := net.Dial("tcp", tb.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("hello"))
	got, _ := io.ReadAll(c)
	c.Close()
	if len(got) != 0 {
		t.Errorf("client read %q", got)
	}
	line := readLines(t, filepath.Join(dir, "access.log"), 1)[0]
	if !strings.Contains(line, " 502 ") || !strings.Contains(line, "error=closed_after_handshake ") {
		t.Errorf("access log %q, want 502 with error=closed_after_handshake", line)
	}
	if !strings.Contains(tb.logText(), "[error]") || !strings.Contains(tb.logText(), "closed_after_handshake") {
		t.Errorf("error log lacks the refusal:\n%s", tb.logText())
	}
}

// TestALPNHint: an HTTP/2 client through tlsrelay to an HTTPS server
// (Go's net/http) without proxy_ssl_alpn: the server does not take the
// HTTP/2 preface over HTTP/1.1 and closes; tlsrelay says at warn what
// to add. With proxy_ssl_alpn h2 the session speaks HTTP/2 and nothing is
// said.
func TestALPNHint(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ln := testutil.Listen(t, "tcp", testutil.FreeAddr(t))
	srv := &http.Server{TLSConfig: set.ServerConfig(), ErrorLog: nil,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	srv.TLSConfig.NextProtos = []string{"h2", "http/1.1"}
	go srv.Serve(tls.NewListener(ln, srv.TLSConfig))
	t.Cleanup(func() { srv.Close() })
	preface := []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
	for _, alpn := range []string{"", "proxy_ssl_alpn h2;"} {
		sub := filepath.Join(dir, "sub"+map[bool]string{true: "1", false: "0"}[alpn != ""])
		os.MkdirAll(sub, 0o700)
		for _, name := range []string{"client.pem", "client.key", "ca.pem"} {
			b, _ := os.ReadFile(filepath.Join(dir, name))
			os.WriteFile(filepath.Join(sub, name), b, 0o600)
		}
		tb := startEngine(t, sub, builtinLogConf(ln.Addr().String(), alpn))
		c, err := net.Dial("tcp", tb.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write(preface)
		buf := make([]byte, 9)
		var rerr error
		if alpn == "" {
			// HTTP/1.1's refusal, to its end: the upstream closes first
			// (a client that resets first ends the session itself).
			buf, rerr = io.ReadAll(c)
		} else {
			_, rerr = io.ReadFull(c, buf) // HTTP/2: the server's SETTINGS frame header
		}
		c.Close()
		line := readLines(t, filepath.Join(sub, "access.log"), 1)[0]
		hinted := strings.Contains(tb.logText(), "proxy_ssl_alpn h2")
		if alpn == "" {
			if !hinted || !strings.Contains(tb.logText(), "[warn]") {
				t.Errorf("without proxy_ssl_alpn: no hint at warn (read %q, %v; access log %q):\n%s", buf, rerr, line, tb.logText())
			}
			continue
		}
		if rerr != nil || buf[3] != 0x4 {
			t.Errorf("with proxy_ssl_alpn h2: read %q, %v; want the server's SETTINGS frame", buf, rerr)
		}
		if hinted || !strings.Contains(line, "alpn=h2 ") {
			t.Errorf("with proxy_ssl_alpn h2: hint %v, access log %q", hinted, line)
		}
	}
}

// TestGnuTLSRefusesCertificate: gnutls-serv (GnuTLS, as OpenLDAP's slapd
// on Debian) that does not trust tlsrelay's client certificate: the
// session is a failed attempt with its class, not a 200 "upstream
// closed" with nothing in the error log.
func TestGnuTLSRefusesCertificate(t *testing.T) {
	gnutls := testutil.NeedProgram(t, "gnutls-serv", "gnutls-bin")
	_, files, dir := newPKI(t, pki.ECDSAP256, 1)
	otherCA := otherCAFile(t, dir)
	// gnutls-serv takes a port, not an address, and listens on every
	// address: a port the kernel just gave out, again if another socket
	// took it meanwhile (its IPv4 bind fails then).
	var port string
	out := &testutil.Buffer{}
	for try := 0; ; try++ {
		probe := testutil.Listen(t, "tcp", "127.0.0.1:0")
		port = strconv.Itoa(probe.Addr().(*net.TCPAddr).Port)
		probe.Close()
		out = &testutil.Buffer{}
		cmd := exec.Command(gnutls, "--echo", "-p", port, "--x509certfile", files.ServerCert, "--x509keyfile", files.ServerKey,
			"--x509cafile", otherCA, "--require-client-cert", "--verify-client-cert")
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
		ipv4 := "IPv4 0.0.0.0 port " + port + "..."
		testutil.WaitFor(t, "gnutls-serv's IPv4 listener", 10*time.Second, func() bool {
			o := out.String()
			return strings.Contains(o, ipv4+"done") || strings.Contains(o, ipv4+"bind() failed")
		})
		if strings.Contains(out.String(), ipv4+"done") {
			break
		}
		if try == 4 {
			t.Fatalf("gnutls-serv could not bind a port five times:\n%s", out.String())
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gnutls-serv:\n%s", out.String())
		}
	})
	tb := startEngine(t, dir, builtinLogConf("127.0.0.1:"+port, ""))
	c, err := net.Dial("tcp", tb.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("hello\n"))
	got, _ := io.ReadAll(c)
	c.Close()
	line := readLines(t, filepath.Join(dir, "access.log"), 1)[0]
	if len(got) != 0 || !strings.Contains(line, " 502 ") ||
		!(strings.Contains(line, "error=closed_after_handshake ") || strings.Contains(line, "error=client_cert_refused ")) {
		t.Errorf("client read %q; access log %q; want 502 with a refusal class", got, line)
	}
	t.Logf("access log: %s", line)
}

// grepLines returns the lines of text that contain s.
func grepLines(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
