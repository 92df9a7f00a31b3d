package testutil

import (
	"net"
	"strings"
	"testing"
)

// TestFreeAddr: the address is on loopback, not 127.0.0.1, and free: a
// listener can take it.
func TestFreeAddr(t *testing.T) {
	seen := map[string]bool{}
	for range 20 {
		a := FreeAddr(t)
		host, _, err := net.SplitHostPort(a)
		if err != nil || !strings.HasPrefix(host, "127.") || host == "127.0.0.1" || seen[a] {
			t.Fatalf("FreeAddr = %q (err %v, seen %v)", a, err, seen[a])
		}
		seen[a] = true
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("listening on %s: %v", a, err)
		}
		ln.Close()
	}
}
