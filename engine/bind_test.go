package engine

import (
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// sourceRecorder is a plain echo upstream that records the source address
// of each connection.
func sourceRecorder(t *testing.T) (addr string, sources func() []string) {
	t.Helper()
	ln := testutil.Listen(t, "tcp", "127.0.0.1:0")
	var mu sync.Mutex
	var seen []string
	testutil.Serve(t, ln, func(c net.Conn) {
		mu.Lock()
		seen = append(seen, c.RemoteAddr().(*net.TCPAddr).IP.String())
		mu.Unlock()
		buf := make([]byte, 64)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				c.Write(buf[:n])
			}
			if err != nil {
				return
			}
		}
	})
	return ln.Addr().String(), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), seen...)
	}
}

// startProxy starts NGINX or tlsrelay (proxy) in dir with the stream
// block, for a differential test. NGINX's readiness probe on listen is a
// session too: it waits for the upstream to see it (sources), so that the
// test counts only its own.
func startProxy(t *testing.T, proxy, dir, stream, listen string, sources func() []string) {
	t.Helper()
	if proxy == "nginx" {
		testutil.StartNginx(t, dir, testutil.NginxConf{Main: "worker_processes 1;\nmaster_process on;", Stream: stream, Probe: listen})
		testutil.WaitFor(t, "NGINX's probe session", 10*time.Second, func() bool { return len(sources()) == 1 })
		return
	}
	startEngine(t, dir, stream)
}

// TestProxyBindVariables: proxy_bind with variables binds each session's
// upstream connection to the address they give for that session, as
// NGINX's does: $server_addr (the address the client reached; a host with
// several addresses keeps one per client-facing address) and
// $remote_addr (the client's own, as a transparent proxy does; here on
// loopback, where every 127/8 address is local).
func TestProxyBindVariables(t *testing.T) {
	up, sources := sourceRecorder(t)
	listenAt := testutil.FreeAddr(t)
	host, _, _ := net.SplitHostPort(listenAt)
	dir := t.TempDir()
	text := "stream {\n" +
		"server { listen " + listenAt + "; proxy_pass " + up + "; proxy_bind $server_addr; }\n" +
		"server { listen 127.0.0.1:0; proxy_pass " + up + "; proxy_bind ${remote_addr}; }\n}\n"
	tb := startEngine(t, dir, text)
	if got, err := echoOnce(listenAt, []byte("by server_addr"), 10*time.Second); err != nil || string(got) != "by server_addr" {
		t.Fatalf("echo through %s: %q, %v", listenAt, got, err)
	}
	h := dialFrom(t, 7, tb.eng.Addrs()[1].String())
	h.c.Close()
	want := []string{host, "127.0.0.7"}
	if got := sources(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("the upstream saw the proxy from %q, want %q", got, want)
	}
}

// TestProxyBindVariableNotAnAddress: a value that is no IP address ends
// the session before any dial, with NGINX's "invalid local address" and
// status 500; an empty value binds nothing. The server goes on serving.
func TestProxyBindVariableNotAnAddress(t *testing.T) {
	up, sources := sourceRecorder(t)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "access.log")
	text := "stream {\nlog_format st '$status';\n" +
		"server { listen 127.0.0.1:0; proxy_pass " + up + "; proxy_bind $remote_port; access_log " + logPath + " st; }\n" +
		"server { listen 127.0.0.1:0; proxy_pass " + up + "; proxy_bind $server_addr; }\n}\n"
	tb := startEngine(t, dir, text)
	c, err := net.Dial("tcp", tb.eng.Addrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if n, _ := c.Read(make([]byte, 1)); n != 0 {
		t.Fatal("the client of an invalid source address got bytes")
	}
	c.Close()
	if got := readLines(t, logPath, 1); got[0] != "500" {
		t.Errorf("access log %q, want status 500", got)
	}
	if l := tb.logText(); !strings.Contains(l, `[error]`) || !strings.Contains(l, `invalid local address "`) {
		t.Errorf("error log:\n%s", l)
	}
	if got := sources(); len(got) != 0 {
		t.Errorf("dialed from %q for an invalid source address", got)
	}
	if got, err := echoOnce(tb.eng.Addrs()[1].String(), []byte("still"), 10*time.Second); err != nil || string(got) != "still" {
		t.Fatalf("the other server: %q, %v", got, err)
	}
}

// TestProxyBindVariablesRefused: a variable whose value is not known when
// the session starts, and pre-warmed connections (bound before their
// session), are refused at load with the directive's position.
func TestProxyBindVariablesRefused(t *testing.T) {
	for _, tc := range []struct{ extra, want string }{
		{"proxy_bind $upstream_addr;", `proxy_bind with the "$upstream_addr" variable is not supported in`},
		{"proxy_bind $server_addr; proxy_ssl on; proxy_ssl_prewarm 2;", `proxy_ssl_prewarm cannot be used with proxy_bind variables in`},
	} {
		path := filepath.Join(t.TempDir(), "t.conf")
		src := "stream {\nserver {\nlisten 127.0.0.1:1;\nproxy_pass 127.0.0.1:9;\n" + tc.extra + "\n}\n}\n"
		cfg, _, err := conf.Parse(path, []byte(src), conf.LoadOptions{})
		if err != nil {
			t.Fatalf("%s: parse: %v", tc.extra, err)
		}
		_, err = Check(cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path+":5") {
			t.Errorf("%s: %v, want %q at %s:5", tc.extra, err, tc.want, path)
		}
	}
}

// TestProxyBindVariablesNginxDiff runs the same two server blocks on NGINX
// and on tlsrelay (proxy_bind $server_addr, proxy_bind $remote_addr) and
// compares the source addresses their upstream saw.
func TestProxyBindVariablesNginxDiff(t *testing.T) {
	testutil.NginxPath(t)
	run := func(proxy string) []string {
		up, sources := sourceRecorder(t)
		a, b := testutil.FreeAddr(t), testutil.FreeAddr(t)
		stream := "stream {\n" +
			"server { listen " + a + "; proxy_pass " + up + "; proxy_bind $server_addr; }\n" +
			"server { listen " + b + "; proxy_pass " + up + "; proxy_bind $remote_addr; }\n}\n"
		startProxy(t, proxy, t.TempDir(), stream, a, sources)
		n0 := len(sources())
		if got, err := echoOnce(a, []byte("x"), 10*time.Second); err != nil || string(got) != "x" {
			t.Fatalf("%s: echo through %s: %q, %v", proxy, a, got, err)
		}
		h := dialFrom(t, 9, b)
		h.c.Close()
		testutil.WaitFor(t, proxy+"'s two sessions upstream", 10*time.Second, func() bool { return len(sources()) == n0+2 })
		got := sources()[n0:]
		ha, _, _ := net.SplitHostPort(a)
		if got[0] == ha {
			got[0] = "the listener's address"
		}
		return got
	}
	want, have := run("nginx"), run("tlsrelay")
	if strings.Join(have, " ") != strings.Join(want, " ") {
		t.Fatalf("sources: tlsrelay %q, NGINX %q", have, want)
	}
	t.Logf("both: %q", have)
}
