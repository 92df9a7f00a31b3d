package engine

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
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

// TestFaultMalformedRecords: after a real handshake and five echoed bytes,
// the upstream writes an oversized or malformed record below TLS. Over
// TLS 1.2 and 1.3 the client gets exactly the five bytes and then its
// connection is reset promptly (an abort: the stream did not end); the error log names the broken read; the other
// server block keeps serving. A record cut short and followed by silence
// is not an error: proxy_timeout ends that session.
func TestFaultMalformedRecords(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	good := startUpstreams(t, set, 1, backend.Echo, nil)
	const idle = 800 * time.Millisecond
	for _, tc := range []struct {
		name string
		raw  []byte
		// log is what the error log says; within bounds the session's end
		// after the echo.
		log    string
		within time.Duration
	}{
		{"oversized", faultnet.RecordHeader(23, 1<<15), "oversized record received", time.Second},
		{"oversized-max-length", append(faultnet.RecordHeader(23, 0xffff), make([]byte, 64)...), "oversized record received", time.Second},
		{"bad-mac", faultnet.Record(23, bytes.Repeat([]byte{0xa5}, 64)), "tls: bad record MAC", time.Second},
		{"empty-application-data", faultnet.Record(23, nil), "tls: bad record MAC", time.Second},
		{"unknown-content-type", faultnet.Record(0x42, []byte("0123456789")), "tls: bad record MAC", time.Second},
		{"plaintext-alert", faultnet.Record(21, []byte{2, 10}), "tls: bad record MAC", time.Second},
		{"change-cipher-spec-flood", bytes.Repeat(faultnet.Record(20, []byte{1}), 32), "reading from upstream failed", time.Second},
		{"sslv2-header", []byte{0x80, 0x2e, 0x01, 0x03, 0x01, 0, 0x15, 0, 0, 0, 0x10}, "tls: received record with version", time.Second},
		{"garbage", bytes.Repeat([]byte{0xff, 0x00, 0x17}, 700), "tls: received record with version", time.Second},
		{"truncated-then-silent", append(faultnet.RecordHeader(23, 100), make([]byte, 10)...),
			"upstream timed out (110: Connection timed out) while proxying connection", idle + time.Second},
	} {
		for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
			t.Run(tc.name+"/"+tls.VersionName(v), func(t *testing.T) {
				scfg := set.ServerConfig()
				scfg.MaxVersion = v
				u, err := faultnet.Start(faultnet.Config{Fault: faultnet.RawAfterHandshake, TLS: scfg, Echo: 5, Raw: tc.raw})
				if err != nil {
					t.Fatal(err)
				}
				defer u.Close()
				os.Remove(filepath.Join(dir, "faults.log"))
				tb := startEngine(t, dir, faultConf([]string{u.Addr()}, good,
					fmt.Sprintf("proxy_timeout %dms;", idle.Milliseconds())))
				c, err := net.Dial("tcp", tb.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.SetWriteDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.Write([]byte("hello")); err != nil {
					t.Fatal(err)
				}
				got, took, err := readToEnd(c, 10*time.Second)
				// A broken record is an abort: the client's connection is
				// reset after the bytes before it (docs/reliability.md);
				// a session ended by proxy_timeout is closed.
				aborted := tc.name != "truncated-then-silent"
				if aborted && !errors.Is(err, syscall.ECONNRESET) {
					t.Fatalf("the session ended with %v after %v, want a connection reset", err, took)
				}
				if !aborted && err != nil {
					t.Fatalf("the session did not end: %v after %v", err, took)
				}
				if string(got) != "hello" {
					t.Errorf("client read %q, want exactly the echo %q", got, "hello")
				}
				if took > tc.within {
					t.Errorf("the session ended after %v, want within %v", took, tc.within)
				}
				testutil.WaitFor(t, "the cause in the error log", 5*time.Second, func() bool {
					return strings.Contains(tb.logText(), tc.log)
				})
				if line := tb.waitAccess(t, 1)[0]; !strings.HasPrefix(line, "200 ") || !strings.HasSuffix(line, " 5 5") {
					t.Errorf("access log %q, want 200 and 5 bytes each way", line)
				} else if aborted && !strings.HasPrefix(line, `200 "upstream aborted"`) {
					t.Errorf("access log %q, want the close reason \"upstream aborted\"", line)
				}
				if _, err := echoOnce(tb.eng.Addrs()[1].String(), []byte("still serving"), 10*time.Second); err != nil {
					t.Errorf("the other server: %v", err)
				}
				if testing.Verbose() {
					for _, l := range strings.Split(tb.logText(), "\n") {
						if strings.Contains(l, "[error]") || strings.Contains(l, "timed out") {
							t.Logf("%v: %s", took.Round(time.Millisecond), l[strings.Index(l, "]")+1:])
						}
					}
				}
			})
		}
	}
}
