package dial

import (
	"crypto/tls"
	"io"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/pool"
)

// warmFixture is a group of one peer, a dialer and a Warm over them.
type warmFixture struct {
	g      *pool.Group
	d      *Dialer
	w      *Warm
	up     *backend.Closing
	counts [WarmResults]atomic.Int64
}

func newWarmFixture(t *testing.T, size int, maxIdle time.Duration) *warmFixture {
	t.Helper()
	set, err := pki.NewSet(pki.ECDSAP256, 1)
	if err != nil {
		t.Fatal(err)
	}
	up, err := backend.StartClosing(set.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	f := &warmFixture{up: up}
	f.g = testGroup(t, f.up.Addr())
	f.d = NewDialer(Config{MinWorkers: 1})
	t.Cleanup(f.d.Close)
	cache := tls.NewLRUClientSessionCache(8)
	cfg := &tls.Config{RootCAs: pki.Pool(set.Root), ServerName: "localhost",
		Certificates: []tls.Certificate{set.Client.TLSCertificate()}, ClientSessionCache: cache}
	f.w = NewWarm(f.g, WarmConfig{
		Size: size, MaxIdle: maxIdle,
		Job: Job{TLS: func(*pool.Peer, net.Addr) (*tls.Config, error) { return cfg, nil }, ConnectTimeout: 5 * time.Second, Socket: SocketOptions{NoDelay: true}},
	})
	f.w.Start(f.d, WarmHooks{Count: func(r WarmResult) { f.counts[r].Add(1) }})
	t.Cleanup(f.w.Stop)
	return f
}

func (f *warmFixture) peer() *pool.Peer { return f.g.Peers()[0] }

// until polls cond (counters other goroutines advance) for up to 10s.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// echoOver writes and reads back through a taken connection (still in
// blocking mode: not detached).
func echoOver(t *testing.T, r Result) {
	t.Helper()
	r.Raw.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.TLS.Write([]byte("ping")); err != nil {
		t.Fatalf("writing over the warm connection: %v", err)
	}
	var b [4]byte
	if _, err := io.ReadFull(r.TLS, b[:]); err != nil || string(b[:]) != "ping" {
		t.Fatalf("echo over the warm connection = %q, %v", b[:], err)
	}
}

// TestWarmTakeAndRefill: the pool fills to Size; a dial job whose balancer
// picked the peer takes a ready connection (no handshake on its path, the
// attempt marked Warm, the peer's connection counted by the pool.Selection) and
// the pool refills.
func TestWarmTakeAndRefill(t *testing.T) {
	f := newWarmFixture(t, 2, time.Minute)
	p := f.peer()
	// The client's side of a TLS 1.3 handshake ends first: wait for
	// the upstream's count too.
	until(t, "2 ready", func() bool { return f.w.Ready(p) == 2 && f.up.Handshakes() == 2 })
	ready := map[string]bool{}
	wp := f.w.peers[p]
	wp.mu.Lock()
	for _, c := range wp.ready {
		ready[c.res.Raw.LocalAddr().String()] = true
	}
	wp.mu.Unlock()
	j := &Job{Sel: f.g.NewSelection("", 0, time.Now()), Warm: f.w, ConnectTimeout: time.Second}
	r := dialJob(t, f.d, j)
	if r.Err != nil || r.TLS == nil || r.Raw == nil {
		t.Fatalf("dial: %+v", r)
	}
	if len(j.Attempts) != 1 || !j.Attempts[0].Warm || j.Attempts[0].Handshake != 0 || j.Attempts[0].Connect != 0 {
		t.Fatalf("attempts = %+v, want one warm attempt with no connect or handshake time", j.Attempts)
	}
	// None on the session's path: the session has one of the connections
	// that were ready (the refill the take started may have dialed a
	// third meanwhile).
	if !ready[r.Raw.LocalAddr().String()] {
		t.Fatalf("the session's connection %s was not one of the ready ones %v", r.Raw.LocalAddr(), ready)
	}
	if n := f.up.Handshakes(); n > 3 {
		t.Fatalf("upstream handshakes after the take = %d, want at most 3 (the two ready, one refill)", n)
	}
	if p.Conns() != 1 {
		t.Fatalf("peer connections = %d, want 1 (the session's)", p.Conns())
	}
	echoOver(t, r)
	r.TLS.Close()
	j.Sel.Release(p)
	if got := f.counts[WarmUsed].Load(); got != 1 {
		t.Fatalf("used = %d, want 1", got)
	}
	until(t, "refilled to 2", func() bool { return f.w.Ready(p) == 2 && f.up.Handshakes() == 3 })
}

// TestWarmExpiry: connections older than MaxIdle are closed and replaced.
func TestWarmExpiry(t *testing.T) {
	f := newWarmFixture(t, 2, 50*time.Millisecond)
	p := f.peer()
	until(t, "4 expired and 2 ready", func() bool { return f.counts[WarmExpired].Load() >= 4 && f.w.Ready(p) == 2 })
	if f.counts[WarmUsed].Load() != 0 || f.counts[WarmFailed].Load() != 0 {
		t.Fatalf("counts used %d failed %d, want 0", f.counts[WarmUsed].Load(), f.counts[WarmFailed].Load())
	}
}

// TestWarmUpstreamClosed: connections the upstream closed while they
// waited are never handed out; what Take returns works.
func TestWarmUpstreamClosed(t *testing.T) {
	f := newWarmFixture(t, 2, time.Minute)
	p := f.peer()
	until(t, "2 ready", func() bool { return f.w.Ready(p) == 2 && f.up.Handshakes() == 2 })
	if n := f.up.CloseAll(); n != 2 {
		t.Fatalf("the upstream closed %d connections, want 2", n)
	}
	var r Result
	until(t, "a live connection", func() bool {
		var ok bool
		r, ok = f.w.Take(p)
		return ok
	})
	defer r.TLS.Close()
	echoOver(t, r)
	if got := f.counts[WarmClosed].Load(); got != 2 {
		t.Fatalf("closed = %d, want 2", got)
	}
}

// TestWarmFailedDial: a peer that refuses is counted as failed, logged
// once, and retried with backoff; Take finds nothing.
func TestWarmFailedDial(t *testing.T) {
	g := testGroup(t, backend.RefusingAddr(t))
	d := NewDialer(Config{MinWorkers: 1})
	defer d.Close()
	var failed atomic.Int64
	logs := make(chan error, 10)
	w := NewWarm(g, WarmConfig{Size: 1, Job: Job{ConnectTimeout: time.Second}})
	w.Start(d, WarmHooks{
		Count: func(r WarmResult) {
			if r == WarmFailed {
				failed.Add(1)
			}
		},
		Logf: func(_ *pool.Peer, f bool, err error) {
			if f {
				logs <- err
			}
		}})
	defer w.Stop()
	until(t, "3 failed dials", func() bool { return failed.Load() >= 3 })
	if len(logs) != 1 {
		t.Fatalf("%d failure logs, want 1", len(logs))
	}
	if _, ok := w.Take(g.Peers()[0]); ok {
		t.Fatal("Take returned a connection to a dead peer")
	}
}

// TestWarmStop: Stop closes the ready connections (the upstream sees them
// end), cancels a handshake in progress and leaves no refiller behind.
func TestWarmStop(t *testing.T) {
	before := runtime.NumGoroutine()
	// A peer that accepts and never answers the handshake.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	g := testGroup(t, ln.Addr().String())
	d := NewDialer(Config{MinWorkers: 1})
	defer d.Close()
	w := NewWarm(g, WarmConfig{Size: 1, Job: Job{ConnectTimeout: time.Minute,
		TLS: func(*pool.Peer, net.Addr) (*tls.Config, error) { return &tls.Config{InsecureSkipVerify: true}, nil }}})
	w.Start(d, WarmHooks{})
	c := <-accepted // the refiller is in its handshake
	defer c.Close()
	stopped := make(chan struct{})
	go func() { w.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("Stop did not cancel a handshake in progress")
	}

	f := newWarmFixture(t, 2, time.Minute)
	until(t, "2 ready", func() bool { return f.w.Ready(f.peer()) == 2 })
	f.w.Stop()
	if f.w.Ready(f.peer()) != 0 {
		t.Fatal("connections left after Stop")
	}
	until(t, "the upstream saw both connections end", func() bool { return f.up.Open() == 0 })
	if _, ok := f.w.Take(f.peer()); ok {
		t.Fatal("Take after Stop returned a connection")
	}
	f.d.Close()
	d.Close()
	until(t, "no goroutine left", func() bool { return runtime.NumGoroutine() <= before+3 })
}

// TestWarmStopBeforeStart: a Warm stopped before it started (a plan
// retired before it was published) never starts its refillers.
func TestWarmStopBeforeStart(t *testing.T) {
	f := newWarmFixture(t, 1, time.Minute) // started: one refiller
	until(t, "one ready", func() bool { return f.w.Ready(f.peer()) == 1 && f.up.Handshakes() == 1 })
	w := NewWarm(f.g, WarmConfig{Size: 1, Job: f.w.cfg.Job})
	w.Stop()
	w.Start(f.d, WarmHooks{})
	if w.cancel != nil {
		t.Fatal("Start after Stop started the refillers")
	}
	if _, ok := w.Take(f.peer()); ok {
		t.Fatal("a stopped Warm handed out a connection")
	}
	if f.up.Handshakes() != 1 {
		t.Fatalf("upstream handshakes = %d, want 1 (the started Warm's only)", f.up.Handshakes())
	}
}
