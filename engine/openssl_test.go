package engine

import (
	"bufio"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// startSServer runs `openssl s_server` on 127.0.0.1 with the set's server
// chain, requiring a client certificate issued under caFile, with extra
// arguments; it returns the address.
func startSServer(t *testing.T, dir, caFile string, args ...string) string {
	t.Helper()
	testutil.NeedProgram(t, "openssl", "openssl")
	base := []string{"s_server", "-accept", "127.0.0.1:0", "-cert", filepath.Join(dir, "server.pem"),
		"-key", filepath.Join(dir, "server.key"), "-cert_chain", filepath.Join(dir, "server.pem"), "-Verify", "2", "-CAfile", caFile, "-verify_return_error", "-www"}
	cmd := exec.Command("openssl", append(base, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	r := bufio.NewReader(out)
	deadline := time.AfterFunc(10*time.Second, func() { cmd.Process.Kill() })
	defer deadline.Stop()
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("s_server did not start: %v", err)
		}
		if a, ok := strings.CutPrefix(strings.TrimSpace(line), "ACCEPT "); ok {
			go io.Copy(io.Discard, r)
			return a
		}
	}
}

// otherCAFile writes, in dir, the certificate of a root that signed
// nothing tlsrelay presents: an upstream trusting only it refuses the
// client certificate. It returns the file's path.
func otherCAFile(t *testing.T, dir string) string {
	t.Helper()
	other, err := pki.NewRoot("another root", pki.Options{Key: pki.ECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "other-ca.pem")
	if err := os.WriteFile(path, other.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// sslServerConf is the guide's server block over one upstream address.
func sslServerConf(addr, extra string) string {
	return "worker_processes 2;\nevents { worker_connections 20000; }\nstream {\nupstream backend {\n    server " + addr + ";\n}\n" +
		strings.Replace(guideServer, "%s", extra, 1) + "}\n"
}

// TestShortSessionsResumeOpenSSL13: clients that send a line and close at
// once (printf ... | socat -t0) still leave a TLS 1.3 ticket behind, although
// OpenSSL sends it only after it read the client's Finished: the session
// reads the upstream on after the client's end. 20 connections: 1 full
// handshake, 19 resumed.
func TestShortSessionsResumeOpenSSL13(t *testing.T) {
	_, _, dir := newPKI(t, pki.ECDSAP256, 1)
	addr := startSServer(t, dir, filepath.Join(dir, "ca.pem"), "-tls1_3")
	tb := startEngine(t, dir, sslServerConf(addr, ""))
	for i := 0; i < 20; i++ {
		c, err := net.DialTimeout("tcp", tb.addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
		c.Close()
		n := uint64(i + 1)
		testutil.WaitFor(t, "the session to end", 20*time.Second, func() bool {
			st := tb.eng.Metrics().Snapshot()
			return st.Accepted == n && st.Active == 0
		})
	}
	st := tb.eng.Metrics().Snapshot()
	t.Logf("openssl s_server -tls1_3, 20 short clients: %d full, %d resumed", st.Full, st.Resumed)
	if st.Full != 1 || st.Resumed != 19 {
		t.Errorf("%d full, %d resumed; want 1 and 19", st.Full, st.Resumed)
	}
}

// TestClientCertRefusedOpenSSL13: a TLS 1.3 upstream that refuses the
// client certificate says so after the handshake completed on the
// client's side. The alert, arriving before any application data, is a
// failed attempt: 502 in the access log, its class logged, the peer's
// failure counted.
func TestClientCertRefusedOpenSSL13(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	otherCA := otherCAFile(t, dir)
	_ = set
	addr := startSServer(t, dir, otherCA, "-tls1_3")
	logPath := filepath.Join(dir, "access.log")
	text := strings.Replace(sslServerConf(addr, "access_log "+logPath+" st;"), "stream {",
		"stream {\nlog_format st '$status $upstream_ssl_error';", 1)
	tb := startEngine(t, dir, text)
	for i, closeAtOnce := range []bool{false, true} {
		c, err := net.DialTimeout("tcp", tb.addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
		if closeAtOnce {
			c.Close()
		} else {
			io.Copy(io.Discard, c)
			c.Close()
		}
		n := uint64(i + 1)
		testutil.WaitFor(t, "the session to end", 20*time.Second, func() bool {
			st := tb.eng.Metrics().Snapshot()
			return st.Accepted == n && st.Active == 0
		})
	}
	testutil.WaitFor(t, "two access-log lines", 10*time.Second, func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Count(string(b), "\n") >= 2
	})
	b, _ := os.ReadFile(logPath)
	if got := strings.Count(string(b), "502 client_cert_refused\n"); got != 2 {
		t.Errorf("access log:\n%s\nwant two lines '502 client_cert_refused'", b)
	}
	if !strings.Contains(tb.logText(), "client_cert_refused") {
		t.Errorf("the error log does not name the class:\n%s", tb.logText())
	}
	var failures uint64
	for _, g := range tb.eng.plan.Load().groups {
		for _, p := range g.Peers() {
			failures += p.Failures()
		}
	}
	if failures != 2 {
		t.Errorf("peer failures %d, want 2", failures)
	}
}
