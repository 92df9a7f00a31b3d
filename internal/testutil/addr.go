package testutil

import (
	"fmt"
	"math/rand/v2"
	"net"
	"testing"
)

// FreeAddr returns a loopback TCP address that nothing listens on, for a
// program a test starts (tlsrelay's binary, NGINX) that must be given its
// listening address in a configuration file. Tests that run the engine in
// their process listen on port 0 instead.
//
// A port the kernel handed out and took back may be handed to the next
// socket bound to port 0 before the program binds it. The address is on a
// random one of loopback's 16 million addresses (127.1.0.1 and up, never
// 127.0.0.1, where every other socket lives): a port taken back on it
// conflicts only with a socket bound to that same address (or to the
// wildcard), which no other test of this module picks. Connections to it
// come from 127.0.0.1, as to 127.0.0.1.
func FreeAddr(t testing.TB) string {
	t.Helper()
	for range 8 {
		ip := fmt.Sprintf("127.%d.%d.%d", 1+rand.IntN(254), rand.IntN(256), 1+rand.IntN(254))
		ln, err := net.Listen("tcp", ip+":0")
		if err != nil {
			continue // taken by a test that chose it too: another one
		}
		addr := ln.Addr().String()
		ln.Close()
		return addr
	}
	t.Fatal("no free loopback address found in 8 tries")
	return ""
}
