package engine

import (
	"bytes"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/engine/memory"
	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
)

// TestMemReleasedAfterSessionsEnd drives sessions through a real engine
// on real sockets with a keeper fed by the engine's counters, as the
// ticker feeds its own: held sessions closed with no client after them
// are released, after the release that followed their arrival.
func TestMemReleasedAfterSessionsEnd(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	tb := startEngine(t, dir, guideConf(ups, ""))
	m := tb.eng.Metrics()

	type release struct {
		accepted uint64
		active   int64
	}
	released := make(chan release, 8)
	k := memory.NewKeeper(time.Now(), func() {
		memory.FreeOSMemory()
		released <- release{m.Accepted(), m.Active()}
	})
	stop := make(chan struct{})
	ticked := make(chan struct{})
	go func() { // the ticker goroutine of this keeper
		defer close(ticked)
		tick := time.NewTicker(memory.CheckEvery)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case now := <-tick.C:
				k.Sessions(now, m.Accepted(), m.Active())
			}
		}
	}()
	defer func() { close(stop); <-ticked }()

	const n = 100
	payload := bytes.Repeat([]byte("held session "), 5000)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := net.Dial("tcp", tb.addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.Write(payload); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, len(payload))); err != nil {
			t.Fatal(err)
		}
	}
	// A burst's worth of allocation, so that a release follows the
	// arrivals while the sessions are held.
	sink := make([]byte, memory.Burst+(8<<20))
	runtime.KeepAlive(sink)
	wait := func(what string) release {
		t.Helper()
		select {
		case r := <-released:
			return r
		case <-time.After(20 * time.Second): // a bound for a broken keeper, not a sync
			t.Fatalf("no release %s within 20 s", what)
			return release{}
		}
	}
	if r := wait("after the arrivals"); r.active < n {
		t.Fatalf("first release with %d sessions active, want the %d held", r.active, n)
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	if r := wait("after the sessions ended"); r.active != 0 {
		t.Fatalf("released with %d sessions active, want 0", r.active)
	}
}
