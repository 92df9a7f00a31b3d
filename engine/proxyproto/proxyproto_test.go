package proxyproto

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	goproxyproto "github.com/pires/go-proxyproto"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// TestRoundTrip: what V1Header and V2Header write, Read parses back to
// the same addresses, and it reads nothing past the header.
func TestRoundTrip(t *testing.T) {
	v4src := &net.TCPAddr{IP: net.IPv4(203, 0, 113, 7), Port: 5555}
	v4dst := &net.TCPAddr{IP: net.IPv4(198, 51, 100, 1), Port: 443}
	v6src := &net.TCPAddr{IP: net.ParseIP("2001:db8::7"), Port: 5555}
	v6dst := &net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 443}
	for _, tc := range []struct {
		name     string
		header   []byte
		src, dst *net.TCPAddr
	}{
		{"v1 tcp4", V1Header(v4src, v4dst), v4src, v4dst},
		{"v1 tcp6", V1Header(v6src, v6dst), v6src, v6dst},
		{"v1 unknown", V1Header(nil, v4dst), nil, nil},
		{"v2 tcp4", V2Header(v4src, v4dst), v4src, v4dst},
		{"v2 tcp6", V2Header(v6src, v6dst), v6src, v6dst},
		{"v2 local", V2Header(v4src, nil), nil, nil},
	} {
		c, s := tcpPair(t)
		c.Write(append(tc.header, "after"...))
		pi, err := Read(s, 5*time.Second)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if tc.src == nil {
			if pi.Src != nil || pi.Dst != nil {
				t.Errorf("%s: addresses %v -> %v, want none", tc.name, pi.Src, pi.Dst)
			}
		} else if pi.Src.String() != tc.src.String() || pi.Dst.String() != tc.dst.String() {
			t.Errorf("%s: addresses %v -> %v, want %v -> %v", tc.name, pi.Src, pi.Dst, tc.src, tc.dst)
		}
		rest := make([]byte, 5)
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(s, rest); err != nil || string(rest) != "after" {
			t.Errorf("%s: after the header %q, %v; want %q", tc.name, rest, err, "after")
		}
	}
	if got := string(V1Header(v4src, v4dst)); got != "PROXY TCP4 203.0.113.7 198.51.100.1 5555 443\r\n" {
		t.Errorf("V1Header = %q", got)
	}
}

// TestTLV: a v2 header's TLVs by NGINX's names and by hexadecimal type.
func TestTLV(t *testing.T) {
	h := goproxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.IPv4(203, 0, 113, 7), Port: 5555}, &net.TCPAddr{IP: net.IPv4(198, 51, 100, 1), Port: 443})
	if err := h.SetTLVs([]goproxyproto.TLV{
		{Type: goproxyproto.PP2_TYPE_AUTHORITY, Value: []byte("example.test")},
		{Type: 0xe0, Value: []byte("custom")},
	}); err != nil {
		t.Fatal(err)
	}
	raw, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	c, s := tcpPair(t)
	c.Write(raw)
	pi, err := Read(s, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"authority": "example.test", "0xe0": "custom", "0x02": "example.test", "alpn": "", "e0": "", "0xzz": ""} {
		if got := pi.TLV(name); got != want {
			t.Errorf("TLV(%q) = %q, want %q", name, got, want)
		}
	}
	if got := (*Info)(nil).TLV("authority"); got != "" {
		t.Errorf("TLV of no header = %q", got)
	}
}

// TestReadBad: what is not a PROXY header, or one that never ends in
// time, is an error; a slow one a timeout.
func TestReadBad(t *testing.T) {
	for _, tc := range []struct{ name, data, want string }{
		{"garbage", "GET / HTTP/1.0\r\n\r\n", "no PROXY header"},
		{"bad v1", "PROXY TCP4 nonsense\r\n", ""},
		{"too long", "PROXY " + strings.Repeat("x", 200), "longer than 107 bytes"},
		{"bad v2 signature", "\r\n\r\n\x00\rXQUIT\n\x21\x11\x00\x00", "not a PROXY v2 signature"},
		{"slow", "PROXY TCP4 1.2.3.4", "timeout"},
	} {
		c, s := tcpPair(t)
		c.Write([]byte(tc.data))
		start := time.Now()
		_, err := Read(s, 200*time.Millisecond)
		if err == nil {
			t.Errorf("%s: no error", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
		var ne net.Error
		timeout := errors.As(err, &ne) && ne.Timeout()
		if timeout != (tc.name == "slow") {
			t.Errorf("%s: %v is a timeout: %v", tc.name, err, timeout)
		}
		if tc.name == "slow" && time.Since(start) < 150*time.Millisecond {
			t.Errorf("slow: ended after %v, before the timeout", time.Since(start))
		}
	}
}
