package engine

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
)

// TestHashTemplate: a key compiled by conf evaluates every key variable,
// braced or not, in any case, as NGINX would; $binary_remote_addr is the
// address's bytes.
func TestHashTemplate(t *testing.T) {
	remote := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 7), Port: 40001}
	remote6 := &net.TCPAddr{IP: net.ParseIP("2001:db8::7"), Port: 40001}
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8443}
	for _, tc := range []struct {
		tmpl   string
		remote net.Addr
		want   string
	}{
		{"static", remote, "static"},
		{"$remote_addr", remote, "10.0.0.7"},
		{"${remote_addr}", remote, "10.0.0.7"},
		{"${REMOTE_ADDR}x", remote, "10.0.0.7x"},
		{"$remote_addr:$remote_port", remote, "10.0.0.7:40001"},
		{"x${server_addr}-$server_port", remote, "x127.0.0.1-8443"},
		{"$binary_remote_addr", remote, "\x0a\x00\x00\x07"},
		{"$binary_remote_addr", remote6, "\x20\x01\x0d\xb8" + string(make([]byte, 11)) + "\x07"},
		{"${remote_addr}${remote_port}", remote6, "2001:db8::740001"},
		{"$1$remote_port", remote, "40001"},
		{"$binary_remote_addr", &net.UnixAddr{Name: "@", Net: "unix"}, ""},
	} {
		ct, err := conf.CompileTemplate(tc.tmpl)
		if err != nil {
			t.Fatalf("%q: %v", tc.tmpl, err)
		}
		if got := compileHashKey(ct, nil).eval(tc.remote, local, nil); got != tc.want {
			t.Errorf("%q for %v: got %q, want %q", tc.tmpl, tc.remote, got, tc.want)
		}
	}
}

// dialFrom connects to addr from the loopback address 127.0.0.last, echoes
// a few bytes and returns the held session.
func dialFrom(t *testing.T, last byte, addr string) *heldSession {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, last)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	h := &heldSession{c: c}
	if err := h.echo(16); err != nil {
		t.Fatalf("from 127.0.0.%d: %v", last, err)
	}
	return h
}

// TestHashKeyVariables: `hash $binary_remote_addr consistent` and `hash
// ${remote_addr}` hash each client's address, not the key's text: twelve
// clients from twelve addresses reach more than one of three peers, and
// each address always the same one.
func TestHashKeyVariables(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 3, backend.Echo, nil)
	for _, key := range []string{"$binary_remote_addr consistent", "${remote_addr}"} {
		t.Run(key, func(t *testing.T) {
			tb := startEngine(t, dir, strings.Replace(guideConf(ups, ""), "upstream backend {", "upstream backend {\n    hash "+key+";", 1))
			peerOf := func(last byte) int {
				var before [3]int64
				for i, u := range ups {
					before[i] = u.Stats().Accepted
				}
				h := dialFrom(t, last, tb.addr)
				h.c.Close()
				for i, u := range ups {
					if u.Stats().Accepted > before[i] {
						return i
					}
				}
				t.Fatalf("no peer accepted the session from 127.0.0.%d", last)
				return -1
			}
			used := map[int]bool{}
			for last := byte(2); last < 14; last++ {
				p := peerOf(last)
				if again := peerOf(last); again != p {
					t.Errorf("127.0.0.%d went to peer %d, then to %d", last, p, again)
				}
				used[p] = true
			}
			if len(used) < 2 {
				t.Errorf("twelve client addresses all went to one peer %v: the key was not evaluated", used)
			}
		})
	}
}

// TestLimitConnZoneBraced: `limit_conn_zone ${remote_addr}` counts each
// client address apart: with limit_conn 1, a client from a second address
// gets through while the first holds its session, a second session from
// the first address does not.
func TestLimitConnZoneBraced(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	text := strings.Replace(guideConf(ups, "limit_conn addr 1;"), "stream {",
		"stream {\nlimit_conn_zone ${remote_addr} zone=addr:1m;", 1)
	tb := startEngine(t, dir, text)
	dialFrom(t, 2, tb.addr)
	dialFrom(t, 3, tb.addr) // fails the test if refused
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	c, err := d.Dial("tcp", tb.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("x"))
	if n, _ := io.Copy(io.Discard, c); n != 0 {
		t.Errorf("a second session from 127.0.0.2 got %d bytes; want it refused", n)
	}
}
