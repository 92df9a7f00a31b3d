package engine

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// plainUpstream accepts connections and hands what each one sent (a
// PROXY header line, if any, and one more line) to the channel.
func plainUpstream(t *testing.T) (string, <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln.Addr().String(), serveLines(t, ln)
}

// serveLines is plainUpstream's server on ln, which it closes with the
// test.
func serveLines(t *testing.T, ln net.Listener) <-chan string {
	t.Cleanup(func() { ln.Close() })
	got := make(chan string, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				r := bufio.NewReader(c)
				var b strings.Builder
				// A PROXY header line, then the body's line.
				for i := 0; i < 2; i++ {
					line, err := r.ReadString('\n')
					b.WriteString(line)
					if err != nil || !strings.HasPrefix(line, "PROXY ") {
						break
					}
				}
				got <- b.String()
			}()
		}
	}()
	return got
}

// TestProxyProtocolFromClients: listen ... proxy_protocol reads the
// client's PROXY header (v1 and v2); with set_real_ip_from trusting the
// peer, $remote_addr and the PROXY header sent upstream carry the original
// client; $proxy_protocol_* and a TLV show in the access log.
func TestProxyProtocolFromClients(t *testing.T) {
	up, got := plainUpstream(t)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "access.log")
	text := "stream {\nlog_format pp '$remote_addr $proxy_protocol_addr:$proxy_protocol_port $proxy_protocol_server_addr:$proxy_protocol_server_port [$proxy_protocol_tlv_authority]';\n" +
		"server { listen 127.0.0.1:51 proxy_protocol; set_real_ip_from 127.0.0.1; proxy_pass " + up + "; proxy_protocol on; access_log " + logPath + " pp; }\n" +
		"server { listen 127.0.0.1:52 proxy_protocol; proxy_pass " + up + "; access_log " + logPath + " pp; }\n}\n"
	tb := startEngine(t, dir, text)
	addrs := tb.eng.Addrs()
	trusted, plain := addrs[0].String(), addrs[1].String()
	send := func(addr string, header []byte, body string) {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(header)
		c.Write([]byte(body))
		select {
		case s := <-got:
			want := body
			if addr == trusted {
				want = fmt.Sprintf("PROXY TCP4 203.0.113.7 127.0.0.1 5555 %d\r\n%s", addrs[0].(*net.TCPAddr).Port, body)
			}
			if s != want {
				t.Errorf("upstream got %q, want %q", s, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("nothing reached the upstream")
		}
	}
	send(trusted, []byte("PROXY TCP4 203.0.113.7 198.51.100.1 5555 443\r\n"), "hello v1\n")
	h := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 5555}, &net.TCPAddr{IP: net.ParseIP("198.51.100.1"), Port: 443})
	if err := h.SetTLVs([]proxyproto.TLV{{Type: proxyproto.PP2_TYPE_AUTHORITY, Value: []byte("example.test")}}); err != nil {
		t.Fatal(err)
	}
	v2, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	send(trusted, v2, "hello v2\n")
	send(plain, []byte("PROXY TCP4 203.0.113.9 198.51.100.1 6666 443\r\n"), "untrusted\n")
	testutil.WaitFor(t, "three access-log lines", 10*time.Second, func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Count(string(b), "\n") >= 3
	})
	b, _ := os.ReadFile(logPath)
	for _, want := range []string{
		"203.0.113.7 203.0.113.7:5555 198.51.100.1:443 []\n",
		"203.0.113.7 203.0.113.7:5555 198.51.100.1:443 [example.test]\n",
		"127.0.0.1 203.0.113.9:6666 198.51.100.1:443 []\n",
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("access log lacks %q:\n%s", want, b)
		}
	}
}

// TestProxyProtocolBadHeaders: a malformed header, a header that never
// ends in time, or none at all close the client with a log line, and
// nothing reaches an upstream.
func TestProxyProtocolBadHeaders(t *testing.T) {
	up, got := plainUpstream(t)
	dir := t.TempDir()
	text := "stream {\nproxy_protocol_timeout 1s;\nserver { listen 127.0.0.1:53 proxy_protocol; proxy_pass " + up + "; }\n}\n"
	tb := startEngine(t, dir, text)
	// headerLines are the log's lines about failed headers: each case
	// must add exactly one, its own, so that a case cannot pass on an
	// earlier case's line.
	headerLines := func() []string {
		var out []string
		for _, l := range strings.Split(tb.logText(), "\n") {
			if strings.Contains(l, "while reading PROXY protocol") {
				out = append(out, l)
			}
		}
		return out
	}
	for i, tc := range []struct{ name, data, log string }{
		{"garbage", "GET / HTTP/1.0\r\n\r\n", "broken header"},
		{"bad v1", "PROXY TCP4 nonsense\r\n", "broken header"},
		{"too long", "PROXY " + strings.Repeat("x", 200), "broken header"},
		{"slow", "PROXY TCP4 1.2.3.4", "client timed out"},
	} {
		c, err := net.Dial("tcp", tb.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte(tc.data))
		start := time.Now()
		if n, _ := io.Copy(io.Discard, c); n != 0 {
			t.Errorf("%s: the client got %d bytes", tc.name, n)
		}
		c.Close()
		if tc.name == "slow" && time.Since(start) < 900*time.Millisecond {
			t.Errorf("slow header closed after %v, before proxy_protocol_timeout", time.Since(start))
		}
		testutil.WaitFor(t, tc.name+" logged", 10*time.Second, func() bool {
			return len(headerLines()) > i && tb.eng.Metrics().Snapshot().ProxyHeaderFailures > uint64(i)
		})
		if got := headerLines(); len(got) != i+1 || !strings.Contains(got[i], tc.log) {
			t.Errorf("%s: the PROXY header lines are %q, want %d, the last saying %q", tc.name, got, i+1, tc.log)
		}
		if n := tb.eng.Metrics().Snapshot().ProxyHeaderFailures; n != uint64(i+1) {
			t.Errorf("%s: proxy header failures %d, want %d", tc.name, n, i+1)
		}
	}
	select {
	case s := <-got:
		t.Errorf("an upstream got %q", s)
	default:
	}
	if n := tb.eng.Metrics().Snapshot().ProxyHeaderFailures; n != 4 {
		t.Errorf("proxy header failures %d, want 4", n)
	}
}
