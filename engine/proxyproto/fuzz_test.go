package proxyproto

import (
	"bytes"
	"net"
	"testing"
	"time"
)

// bytesConn is a net.Conn that reads from a byte slice: the fuzzer's
// client. Writes and deadlines do nothing.
type bytesConn struct {
	net.Conn
	r *bytes.Reader
}

func (c *bytesConn) Read(p []byte) (int, error)         { return c.r.Read(p) }
func (c *bytesConn) SetReadDeadline(time.Time) error    { return nil }
func (c *bytesConn) SetDeadline(time.Time) error        { return nil }
func (c *bytesConn) RemoteAddr() net.Addr               { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (c *bytesConn) LocalAddr() net.Addr                { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2} }
func (c *bytesConn) Write(p []byte) (int, error)        { return len(p), nil }
func (c *bytesConn) SetWriteDeadline(t time.Time) error { return nil }

// FuzzRead: whatever a client sends, Read neither panics nor reads past a
// header it accepts (at most 107 bytes for v1, 16 plus the stated length
// for v2), and the addresses of an accepted header survive being written
// again with V1Header and V2Header and read back.
func FuzzRead(f *testing.F) {
	src := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 40000}
	dst := &net.TCPAddr{IP: net.IPv4(198, 51, 100, 2), Port: 443}
	f.Add(V1Header(src, dst))
	f.Add(V2Header(src, dst))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add([]byte("PROXY TCP6 ::1 ::1 1 2\r\nrest"))
	f.Add(append(V2Header(src, dst), "after"...))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		pi, err := Read(&bytesConn{r: r}, 0)
		if err != nil {
			return
		}
		used := len(data) - r.Len()
		if data[0] == 'P' && used > maxV1 {
			t.Fatalf("read %d bytes of a v1 header", used)
		}
		for _, name := range []string{"alpn", "authority", "unique_id", "0x05", "ssl_cn", "netns", "0xEE"} {
			pi.TLV(name)
		}
		s, okS := pi.Src.(*net.TCPAddr)
		d, okD := pi.Dst.(*net.TCPAddr)
		if !okS || !okD {
			return
		}
		for _, h := range [][]byte{V1Header(s, d), V2Header(s, d)} {
			back, err := Read(&bytesConn{r: bytes.NewReader(h)}, 0)
			if err != nil {
				t.Fatalf("%q read back: %v", h, err)
			}
			bs, _ := back.Src.(*net.TCPAddr)
			bd, _ := back.Dst.(*net.TCPAddr)
			if bs == nil || bd == nil || !bs.IP.Equal(s.IP) || bs.Port != s.Port || !bd.IP.Equal(d.IP) || bd.Port != d.Port {
				t.Fatalf("%v -> %v read back as %v -> %v", s, d, back.Src, back.Dst)
			}
		}
	})
}
