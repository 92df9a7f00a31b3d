package engine

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/engine/proxyproto"
	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// TestUnsupportedSettings: NGINX settings the engine cannot honour are
// refused by Check with the directive's position, not ignored.
func TestUnsupportedSettings(t *testing.T) {
	for _, tc := range []struct {
		name, server, want string
		line               int
	}{
		// $remote_addr and the other variables known when a session
		// starts are supported (TestProxyBindVariables).
		{"bind variables", "proxy_bind $upstream_addr;", `proxy_bind with the "$upstream_addr" variable is not supported`, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			listen := "listen 127.0.0.1:12345;"
			up := "server 127.0.0.1:1;"
			text := fmt.Sprintf("stream {\nupstream u { %s }\nserver { %s proxy_pass u;\n%s\n} }\n", up, listen, tc.server)
			cfg, _, err := conf.Parse("t.conf", []byte(text), conf.LoadOptions{})
			if err != nil {
				t.Fatalf("parse: %v\n%s", err, text)
			}
			_, err = Check(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), fmt.Sprintf("t.conf:%d", tc.line)) {
				t.Fatalf("Check = %v, want %q at t.conf:%d", err, tc.want, tc.line)
			}
		})
	}
}

// TestUploadRate: proxy_upload_rate holds a client to its rate, NGINX's
// way (rate × (whole seconds + 1)): 96 KiB at 32 KiB/s take at least 2s.
func TestUploadRate(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Sink, nil)
	tb := startEngine(t, dir, guideConf(ups, "proxy_upload_rate 32k;"))
	c, err := net.Dial("tcp", tb.addr)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	const size = 96 << 10
	if _, err := c.Write(make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	// Closing at once: the rest still goes, at the rate (the sink counts
	// when its connection ends).
	c.Close()
	testutil.WaitFor(t, "the upload at the upstream", 20*time.Second, func() bool { return ups[0].Stats().BytesIn == size })
	if el := time.Since(start); el < 1900*time.Millisecond {
		t.Fatalf("96 KiB at 32 KiB/s arrived after %v, want at least 2s", el)
	}
}

// TestDownloadRate: proxy_download_rate likewise.
func TestDownloadRate(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	const size = 96 << 10
	srv, err := backend.Start(backend.Config{TLS: set.ServerConfig(), Mode: backend.Source, SourceBytes: size})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	tb := startEngine(t, dir, guideConf([]*backend.Server{srv}, "proxy_download_rate 32k;"))
	start := time.Now()
	c, err := net.Dial("tcp", tb.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 1900*time.Millisecond {
		t.Fatalf("96 KiB at 32 KiB/s arrived after %v, want at least 2s", el)
	}
}

// TestProxyBind: proxy_bind sets the upstream connection's source address.
func TestProxyBind(t *testing.T) {
	ln := testutil.Listen(t, "tcp", "127.0.0.1:0")
	var mu sync.Mutex
	var from string
	testutil.Serve(t, ln, func(c net.Conn) {
		mu.Lock()
		from = c.RemoteAddr().(*net.TCPAddr).IP.String()
		mu.Unlock()
		io.Copy(c, c)
	})
	dir := t.TempDir()
	text := "stream { server { listen 127.0.0.1:0; proxy_pass " + ln.Addr().String() +
		"; proxy_bind 127.0.0.2; proxy_socket_keepalive on; proxy_socket_rcvbuf 64k; } }\n"
	tb := startEngine(t, dir, text)
	if _, err := echoOnce(tb.addr, []byte("plain"), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if from != "127.0.0.2" {
		t.Fatalf("upstream saw the proxy from %s, want 127.0.0.2", from)
	}
}

// TestProxyProtocolHeader: proxy_protocol on sends a PROXY v1 header in
// clear before the TLS handshake.
func TestProxyProtocolHeader(t *testing.T) {
	for _, v := range []string{"on", "v2"} {
		t.Run(v, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			got := make(chan []byte, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				b := make([]byte, 200)
				n, _ := io.ReadAtLeast(c, b, 16)
				got <- b[:n]
			}()
			dir := t.TempDir()
			text := "stream { server { listen 127.0.0.1:0; proxy_pass " + ln.Addr().String() + "; proxy_protocol " + v + "; } }\n"
			tb := startEngine(t, dir, text)
			c, err := net.Dial("tcp", tb.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			h := <-got
			cli := c.LocalAddr().(*net.TCPAddr)
			if v == "on" {
				want := fmt.Sprintf("PROXY TCP4 127.0.0.1 127.0.0.1 %d %s\r\n", cli.Port, strings.Split(tb.addr, ":")[1])
				if string(h) != want {
					t.Fatalf("header %q, want %q", h, want)
				}
			} else if string(h[:12]) != proxyproto.V2Signature || h[12] != 0x21 || h[13] != 0x11 {
				t.Fatalf("v2 header % x", h)
			}
		})
	}
}
