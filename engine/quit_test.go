package engine

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
)

// TestQuitClosesListener: a graceful quit closes the listening socket at
// once, so new connections are refused (an L4 balancer sees the instance
// go), while the sessions held go on to their end.
func TestQuitClosesListener(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	tb := startEngine(t, dir, guideConf(ups, ""))
	held := make([]*heldSession, 10)
	for i := range held {
		held[i] = holdSession(t, tb.addr)
	}
	close(tb.quit)
	waitFor(t, "quitting", 5*time.Second, func() bool { return tb.eng.quitting.Load() })
	c, err := net.DialTimeout("tcp", tb.addr, 5*time.Second)
	if err == nil {
		c.Close()
		t.Fatal("a new connection was accepted after quit")
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("new connection after quit: %v, want connection refused", err)
	}
	for i, h := range held {
		if err := h.echo(32 << 10); err != nil {
			t.Errorf("held session %d after quit: %v", i, err)
		}
	}
	for _, h := range held {
		h.c.Close()
	}
	select {
	case <-tb.done:
		tb.done <- nil // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after the last session ended")
	}
}
