package engine

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/faultnet"
	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// The fault suite, upstream side: upstreams that break the handshake or
// the stream on purpose (internal/faultnet). Each case checks what the
// client sees, what is logged, that the next upstream is tried exactly
// where NGINX tries it (while establishing: connect or handshake error or
// timeout; never once bytes flowed), and that the process keeps serving:
// a second server block, with a session held through it from before the
// fault, goes on working. docs/reliability.md records the figures.

// faultLogFormat is the access-log format of the fault tests.
const faultLogFormat = `log_format faults '$status "$close_reason" "$upstream_addr" "$upstream_ssl_error" $bytes_sent $bytes_received';`

// faultConf is a configuration with two server blocks: the first (the
// testbed's addr) proxies to the group "backend" of faulty, logging to
// {{dir}}/faults.log, with extra directives; the second proxies to the
// group "good" of good, and is how a test checks that the process keeps
// serving.
func faultConf(faulty []string, good []*backend.Server, extra string) string {
	var b strings.Builder
	b.WriteString("worker_processes 2;\nevents { worker_connections 20000; }\nstream {\n" + faultLogFormat + "\n")
	b.WriteString("upstream backend {\n")
	for _, a := range faulty {
		fmt.Fprintf(&b, "    server %s;\n", a)
	}
	b.WriteString("}\n")
	b.WriteString(upstreamBlock("good", good))
	b.WriteString(fmt.Sprintf(guideServer, "access_log {{dir}}/faults.log faults;\n"+extra))
	b.WriteString(strings.Replace(fmt.Sprintf(guideServer, ""), "proxy_pass backend;", "proxy_pass good;", 1))
	b.WriteString("}\n")
	return b.String()
}

// accessLines returns the lines of {{dir}}/faults.log.
func (tb *testbed) accessLines() []string {
	b, _ := os.ReadFile(filepath.Join(tb.dir, "faults.log"))
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

// waitAccess waits until the access log has n lines and returns them.
func (tb *testbed) waitAccess(t *testing.T, n int) []string {
	t.Helper()
	var lines []string
	testutil.WaitFor(t, fmt.Sprintf("%d access-log lines", n), 10*time.Second, func() bool {
		lines = tb.accessLines()
		return len(lines) >= n && lines[0] != ""
	})
	return lines
}

// readToEnd reads c until EOF or an error, within d; it returns what came
// and how long it took.
func readToEnd(c net.Conn, d time.Duration) ([]byte, time.Duration, error) {
	start := time.Now()
	c.SetReadDeadline(start.Add(d))
	b, err := io.ReadAll(c)
	return b, time.Since(start), err
}

// upstreamFault is one misbehaving upstream of the suite.
type upstreamFault struct {
	name string
	cfg  faultnet.Config
	// early: the fault strikes while the upstream is being established,
	// before any byte was relayed; NGINX then tries the next upstream.
	early bool
	// log is what the error log must say of it.
	log string
	// within bounds how long after the fault the client's session ends.
	within time.Duration
	// class, if set, is the access log's $upstream_ssl_error.
	class string
}

// connectTimeout is the proxy_connect_timeout of the fault tests: the
// stalled handshake ends after it.
const connectTimeout = 500 * time.Millisecond

func upstreamFaults() []upstreamFault {
	return []upstreamFault{
		{"random-reply", faultnet.Config{Fault: faultnet.RandomReply}, true,
			"first record does not look like a TLS handshake", time.Second, "handshake"},
		{"reset-in-handshake", faultnet.Config{Fault: faultnet.ResetInHandshake}, true,
			"connection reset by peer", time.Second, "closed"},
		{"stall-after-serverhello", faultnet.Config{Fault: faultnet.StallAfterServerHello}, true,
			"TLS handshake timed out after 500ms (timeout) while SSL handshaking to upstream", connectTimeout + time.Second, "timeout"},
		{"reset-mid-stream", faultnet.Config{Fault: faultnet.ResetMidStream, Echo: 5}, false,
			"upstream aborted the stream: read: connection reset by peer", time.Second, ""},
		{"close-notify-then-data", faultnet.Config{Fault: faultnet.CloseNotifyThenData, Echo: 5,
			Raw: []byte("bytes after close_notify")}, false,
			"upstream closed", time.Second, ""},
		{"oversized-record", faultnet.Config{Fault: faultnet.RawAfterHandshake, Echo: 5,
			Raw: faultnet.RecordHeader(23, 20000)}, false,
			"oversized record received with length 20000", time.Second, ""},
		{"bad-record-mac", faultnet.Config{Fault: faultnet.RawAfterHandshake, Echo: 5,
			Raw: faultnet.Record(23, bytes.Repeat([]byte{0x5a}, 64))}, false,
			"bad record MAC", time.Second, ""},
	}
}

// TestFaultUpstreamAlone: a group of one misbehaving upstream. The client
// sees its session end promptly: at once with nothing for a fault while
// establishing (502 in the access log), right after the bytes relayed so
// far for a fault in the stream (200). The cause is in the error log; the
// other server block and a session held through it go on.
func TestFaultUpstreamAlone(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	good := startUpstreams(t, set, 1, backend.Echo, nil)
	for _, f := range upstreamFaults() {
		t.Run(f.name, func(t *testing.T) {
			cfg := f.cfg
			cfg.TLS = set.ServerConfig()
			u, err := faultnet.Start(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer u.Close()
			os.Remove(filepath.Join(dir, "faults.log")) // the last subtest's
			tb := startEngine(t, dir, faultConf([]string{u.Addr()}, good,
				fmt.Sprintf("proxy_connect_timeout %dms;", connectTimeout.Milliseconds())))
			other := tb.eng.Addrs()[1].String()
			held := holdSession(t, other)

			c, err := net.Dial("tcp", tb.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			want := ""
			if !f.early {
				want = "hello"
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.Write([]byte(want)); err != nil {
					t.Fatal(err)
				}
			}
			got, took, err := readToEnd(c, 10*time.Second)
			// A fault in the stream other than a clean close_notify is an
			// abort: the client's connection is reset after the bytes
			// before it (docs/reliability.md).
			aborted := !f.early && f.name != "close-notify-then-data"
			if aborted && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("the session ended with %v after %v (read %q), want a connection reset", err, took, got)
			}
			if !aborted && err != nil {
				t.Fatalf("the session did not end: %v after %v (read %q)", err, took, got)
			}
			if string(got) != want {
				t.Errorf("client read %q, want %q", got, want)
			}
			if took > f.within {
				t.Errorf("the session ended %v after the client's first step, want within %v", took, f.within)
			}
			t.Logf("%s: session ended after %v", f.name, took)
			testutil.WaitFor(t, "the cause in the error log", 5*time.Second, func() bool {
				return strings.Contains(tb.logText(), f.log)
			})
			status := "200"
			if f.early {
				status = "502"
			}
			line := tb.waitAccess(t, 1)[0]
			if !strings.HasPrefix(line, status+" ") {
				t.Errorf("access log %q, want status %s", line, status)
			}
			if aborted && !strings.HasPrefix(line, `200 "upstream aborted"`) {
				t.Errorf("access log %q, want the close reason \"upstream aborted\"", line)
			}
			t.Logf("access log: %s", line)
			if f.class != "" && !strings.Contains(line, `" "`+f.class+`" `) {
				t.Errorf("access log %q, want $upstream_ssl_error %q", line, f.class)
			}
			if testing.Verbose() {
				for _, l := range strings.Split(tb.logText(), "\n") {
					if i := strings.Index(l, "["); i >= 0 && (strings.Contains(l, "[error]") || strings.Contains(l, "upstream closed")) {
						t.Logf("logged: %s", l[i:])
					}
				}
			}
			if u.Struck() != 1 {
				t.Errorf("the fault struck %d times, want 1", u.Struck())
			}
			if err := held.echo(64 << 10); err != nil {
				t.Errorf("a session held through the other server: %v", err)
			}
			if _, err := echoOnce(other, []byte("still serving"), 10*time.Second); err != nil {
				t.Errorf("a new session through the other server: %v", err)
			}
			testutil.WaitFor(t, "every session to end", 10*time.Second, func() bool { return tb.eng.Metrics().Active() == 1 })
		})
	}
}

// TestFaultUpstreamNext: a group of the misbehaving upstream and a good
// one, four clients in turn. A fault while establishing makes the session
// go on to the good upstream, and the faulty one is tried once (max_fails
// 1 then takes it out for fail_timeout): every client's echo works. A
// fault after bytes flowed is never retried: the two upstreams together
// saw exactly one connection per client.
func TestFaultUpstreamNext(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	other := startUpstreams(t, set, 1, backend.Echo, nil)
	for _, f := range upstreamFaults() {
		t.Run(f.name, func(t *testing.T) {
			cfg := f.cfg
			cfg.TLS = set.ServerConfig()
			u, err := faultnet.Start(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer u.Close()
			good := startUpstreams(t, set, 1, backend.Echo, nil)[0]
			os.Remove(filepath.Join(dir, "faults.log")) // the last subtest's
			tb := startEngine(t, dir, faultConf([]string{u.Addr(), good.Addr()}, other,
				fmt.Sprintf("proxy_connect_timeout %dms;", connectTimeout.Milliseconds())))
			const clients = 4
			for i := 0; i < clients; i++ {
				got, err := echoOnce(tb.addr, []byte("hello"), 10*time.Second)
				if err != nil {
					t.Fatalf("client %d: %v (read %q)", i, err, got)
				}
			}
			testutil.WaitFor(t, "every session to end", 10*time.Second, func() bool { return tb.eng.Metrics().Active() == 0 })
			lines := tb.waitAccess(t, clients)
			if f.early {
				if n := u.Accepted(); n != 1 {
					t.Errorf("the faulty upstream was tried %d times, want 1", n)
				}
				if n := good.Stats().Accepted; n != clients {
					t.Errorf("the good upstream served %d sessions, want %d", n, clients)
				}
				retried := 0
				for _, l := range lines {
					if strings.Contains(l, `"`+u.Addr()+", "+good.Addr()+`"`) {
						retried++
					}
				}
				if retried != 1 {
					t.Errorf("%d sessions show both upstreams in $upstream_addr, want 1:\n%s", retried, strings.Join(lines, "\n"))
				}
				if !strings.Contains(tb.logText(), "upstream server temporarily disabled") {
					t.Error("the faulty upstream was not reported disabled")
				}
			} else {
				if n := u.Accepted() + good.Stats().Accepted; n != clients {
					t.Errorf("the upstreams saw %d connections for %d clients: a session was retried after bytes flowed", n, clients)
				}
				if u.Struck() == 0 {
					t.Error("no session reached the faulty upstream")
				}
			}
			for _, l := range lines {
				if !strings.HasPrefix(l, "200 ") {
					t.Errorf("access log %q, want status 200", l)
				}
			}
			if f.early {
				testutil.WaitFor(t, "the cause in the error log", 5*time.Second, func() bool {
					return strings.Contains(tb.logText(), f.log)
				})
			}
		})
	}
}
