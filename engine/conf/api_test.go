package conf

import (
	"net/netip"
	"testing"
)

// TestAPIAllows: the allow list matches a client as allow and deny do:
// an IPv4-mapped address, written or seen, is its IPv4 address.
func TestAPIAllows(t *testing.T) {
	cfg, _, err := Parse("t.conf", []byte("metrics_listen 127.0.0.1:9100; api allow=::ffff:10.0.0.1,192.168.0.0/16;"), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.Main.API
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"10.0.0.1", true},
		{"::ffff:10.0.0.1", true},
		{"10.0.0.2", false},
		{"192.168.7.7", true},
		{"::1", false},
	} {
		if got := a.Allows(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("Allows(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}
