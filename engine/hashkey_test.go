package engine

import (
	"net"
	"testing"
)

func TestHashTemplate(t *testing.T) {
	remote := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 7), Port: 40001}
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8443}
	for _, tc := range []struct{ tmpl, want string }{
		{"static", "static"},
		{"$remote_addr", "10.0.0.7"},
		{"$remote_addr:$remote_port", "10.0.0.7:40001"},
		{"x$server_addr-$server_port$", "x127.0.0.1-8443$"},
		{"$remote_address", "10.0.0.7ess"},
		{"$unknown$remote_port", "$unknown40001"},
		{"$$remote_addr", "$10.0.0.7"},
	} {
		if got := compileHashKey(tc.tmpl).eval(remote, local); got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.tmpl, got, tc.want)
		}
	}
}
