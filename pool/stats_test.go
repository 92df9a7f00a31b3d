package pool

import (
	"crypto/tls"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/tlsbridge"
)

func TestHistogram(t *testing.T) {
	bounds := HistogramBounds()
	for i := 1; i < len(bounds); i++ {
		if bounds[i] <= bounds[i-1] {
			t.Fatalf("bounds not increasing at %d: %v", i, bounds)
		}
	}
	tests := []struct {
		d      time.Duration
		bucket int // first cumulative bucket that counts it; HistogramBuckets: only +Inf
	}{
		{0, 0},
		{100 * time.Microsecond, 0}, // bounds are inclusive, as Prometheus's le
		{100*time.Microsecond + 1, 1},
		{time.Millisecond, 3},
		{3 * time.Millisecond, 5},
		{10 * time.Second, HistogramBuckets - 1},
		{time.Minute, HistogramBuckets},
	}
	for _, tc := range tests {
		var h Histogram
		h.Observe(tc.d)
		s := h.Snapshot()
		if s.Count != 1 || s.Sum != tc.d {
			t.Fatalf("%v: count %d sum %v", tc.d, s.Count, s.Sum)
		}
		for i, c := range s.Cumulative {
			if want := uint64(0); i >= tc.bucket {
				want = 1
				if c != want {
					t.Fatalf("%v: bucket %d (le %v) = %d, want %d", tc.d, i, bounds[i], c, want)
				}
			} else if c != want {
				t.Fatalf("%v: bucket %d (le %v) = %d, want %d", tc.d, i, bounds[i], c, want)
			}
		}
	}
	var h Histogram
	for _, tc := range tests {
		h.Observe(tc.d)
	}
	s := h.Snapshot()
	if s.Count != uint64(len(tests)) || s.Cumulative[HistogramBuckets-1] != uint64(len(tests)-1) {
		t.Fatalf("all: %+v", s)
	}
}

// TestFailureClasses: every tlsbridge.Reason of a failure has its own slot
// and name; a reason added to tlsbridge after ReasonHandshake would land in
// "other", so this test fails until FailureClasses covers it.
func TestFailureClasses(t *testing.T) {
	seen := map[string]bool{}
	for r := tlsbridge.ReasonUnknownCA; r <= tlsbridge.ReasonHandshake; r++ {
		i := FailureClass(r)
		if i == 0 || FailureClassName(i) != r.String() || seen[r.String()] {
			t.Fatalf("%v: slot %d name %q", r, i, FailureClassName(i))
		}
		seen[r.String()] = true
	}
	if FailureClass(tlsbridge.ReasonNone) != 0 || FailureClass(tlsbridge.Reason(99)) != 0 || FailureClassName(0) != "other" {
		t.Fatal("none and unknown reasons are not 'other'")
	}
	if next := tlsbridge.ReasonHandshake + 1; !strings.HasPrefix(next.String(), "Reason(") {
		t.Fatalf("tlsbridge has a new reason %q: raise FailureClasses", next)
	}
}

// TestPeerState: down, banned after max_fails within fail_timeout, banned
// during the probe after it, up again once the probe connects.
func TestPeerState(t *testing.T) {
	a, b, c := "10.0.0.1:443", "10.0.0.2:443", "10.0.0.3:443"
	down := NewServerConfig(c)
	down.Down = true
	sa := NewServerConfig(a)
	sa.MaxFails, sa.FailTimeout = 2, 10*time.Second
	g, err := NewGroup(GroupConfig{Name: "g", Servers: []ServerConfig{sa, NewServerConfig(b), down}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pa, pc := g.Peers()[0], g.Peers()[2]
	t0 := time.Unix(1_000_000, 0)
	if pa.State(t0) != PeerUp || pc.State(t0) != PeerDown {
		t.Fatalf("states %v %v", pa.State(t0), pc.State(t0))
	}
	fail := func(now time.Time) {
		s := g.NewSelection("", 0, now)
		for {
			p, err := s.Next(now)
			if err != nil {
				t.Fatal(err)
			}
			if p == pa {
				s.Failed(p, now)
				return
			}
			s.Release(p)
			s = g.NewSelection("", 0, now)
		}
	}
	fail(t0)
	if pa.State(t0) != PeerUp {
		t.Fatal("banned after one failure of two")
	}
	fail(t0.Add(time.Second))
	if st := pa.State(t0.Add(time.Second)); st != PeerBanned {
		t.Fatalf("after max_fails: %v", st)
	}
	if st := pa.State(t0.Add(11*time.Second + time.Millisecond)); st != PeerUp {
		t.Fatalf("after fail_timeout: %v", st)
	}
	// The probe: a selection after fail_timeout picks pa and opens a new
	// window; until it connects, pa stays banned for everyone else.
	probeAt := t0.Add(12 * time.Second)
	s := g.NewSelection("", 0, probeAt)
	var p *Peer
	for p != pa {
		if p != nil {
			s.Release(p)
			s = g.NewSelection("", 0, probeAt)
		}
		if p, err = s.Next(probeAt); err != nil {
			t.Fatal(err)
		}
	}
	if st := pa.State(probeAt); st != PeerBanned {
		t.Fatalf("during the probe: %v", st)
	}
	s.Connected(pa, probeAt)
	if st := pa.State(probeAt); st != PeerUp {
		t.Fatalf("after the probe connected: %v", st)
	}
	s.Release(pa)
	if PeerUp.String() != "up" || PeerBanned.String() != "banned" || PeerDown.String() != "down" {
		t.Fatal("state names")
	}
}

// tlsServer is a TLS 1.2 server on 127.0.0.1:0 (tickets arrive in the
// handshake) that writes one byte and drains.
func tlsServer(t *testing.T, set *pki.Set) string {
	t.Helper()
	cfg := &tls.Config{Certificates: []tls.Certificate{set.Server.TLSCertificate()}, MaxVersion: tls.VersionTLS12}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if err := c.(*tls.Conn).Handshake(); err != nil {
					return
				}
				io.Copy(io.Discard, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// TestDialerRecordsPeerMetrics: the dialer counts connects, full and
// resumed handshakes with their times, and failures by class, on the peer.
func TestDialerRecordsPeerMetrics(t *testing.T) {
	set, err := pki.NewSet(pki.ECDSAP256, 0)
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewSet(pki.ECDSAP256, 0)
	if err != nil {
		t.Fatal(err)
	}
	g := testGroup(t, tlsServer(t, set))
	p := g.Peers()[0]
	d := NewDialer(DialerConfig{MinWorkers: 1})
	defer d.Close()
	cache := tls.NewLRUClientSessionCache(4)
	good := func(*Peer) (*tls.Config, error) {
		return &tls.Config{ServerName: "localhost", RootCAs: pki.Pool(set.Root), ClientSessionCache: cache}, nil
	}
	wrongCA := func(*Peer) (*tls.Config, error) {
		return &tls.Config{ServerName: "localhost", RootCAs: pki.Pool(other.Root)}, nil
	}
	run := func(tlsFor func(*Peer) (*tls.Config, error)) DialResult {
		j := &DialJob{Sel: g.NewSelection("", 0, time.Now()), TLS: tlsFor, ConnectTimeout: 5 * time.Second}
		r := dial(t, d, j)
		if r.Err == nil {
			r.TLS.Close()
			j.Sel.Release(r.Peer)
		}
		return r
	}
	for i, want := range []bool{false, true, true} {
		r := run(good)
		if r.Err != nil || r.State.DidResume != want {
			t.Fatalf("dial %d: resumed %v err %v", i, r.State.DidResume, r.Err)
		}
	}
	if r := run(wrongCA); r.Err == nil {
		t.Fatal("dial with the wrong CA worked")
	}
	full, resumed, failed := p.Handshakes()
	if full != 1 || resumed != 2 || failed != 1 {
		t.Fatalf("handshakes full %d resumed %d failed %d", full, resumed, failed)
	}
	if byClass := p.HandshakeFailures(); byClass[FailureClass(tlsbridge.ReasonUnknownCA)] != 1 {
		t.Fatalf("failures by class %v", byClass)
	}
	if ct, ht := p.ConnectTime(), p.HandshakeTime(); ct.Count != 4 || ht.Count != 3 || ct.Sum <= 0 || ht.Sum <= 0 {
		t.Fatalf("connect %+v handshake %+v", ct, ht)
	}
	st := d.Stats()
	// The default dialer has no queue and no bound (issue 18).
	if st.Queued != 4 || st.Rejected != 0 || st.Workers < 1 || st.QueueCapacity != 0 || st.MaxWorkers != 0 {
		t.Fatalf("dialer stats %+v", st)
	}
}

// TestDialerStats: busy workers, queue depth and refused jobs.
func TestDialerStats(t *testing.T) {
	g := testGroup(t, listenTCP(t).Addr().String())
	d := NewDialer(DialerConfig{MinWorkers: 2, MaxWorkers: 2, Queue: 3})
	defer d.Close()
	release := make(chan struct{})
	var once sync.Once
	defer once.Do(func() { close(release) })
	started := make(chan struct{}, 8)
	blocked := func(*Peer) (*tls.Config, error) {
		started <- struct{}{}
		<-release
		return nil, errors.New("released")
	}
	var wg sync.WaitGroup
	submit := func() error {
		wg.Add(1)
		err := d.Submit(&DialJob{Sel: g.NewSelection("", 0, time.Now()), TLS: blocked, ConnectTimeout: 5 * time.Second,
			Done: func(DialResult) { wg.Done() }})
		if err != nil {
			wg.Done()
		}
		return err
	}
	for i := 0; i < 2; i++ {
		if err := submit(); err != nil {
			t.Fatal(err)
		}
	}
	<-started
	<-started
	for i := 0; i < 3; i++ {
		if err := submit(); err != nil {
			t.Fatalf("queued job %d: %v", i, err)
		}
	}
	if err := submit(); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("Submit on a full queue: %v", err)
	}
	st := d.Stats()
	want := DialerStats{QueueDepth: 3, QueueCapacity: 3, Workers: 2, Busy: 2, MaxWorkers: 2, Queued: 5, Rejected: 1}
	if st != want {
		t.Fatalf("stats %+v, want %+v", st, want)
	}
	once.Do(func() { close(release) })
	wg.Wait()
	if st := d.Stats(); st.QueueDepth != 0 || st.Queued != 5 {
		t.Fatalf("after: %+v", st)
	}
}

// TestPeerRecordNoAlloc: the record methods the data path calls allocate
// nothing.
func TestPeerRecordNoAlloc(t *testing.T) {
	g := testGroup(t, "10.0.0.1:443")
	p := g.Peers()[0]
	now := time.Now()
	n := testing.AllocsPerRun(1000, func() {
		p.ObserveConnect(time.Millisecond)
		p.ObserveHandshake(3*time.Millisecond, true)
		p.ObserveHandshake(3*time.Millisecond, false)
		p.ObserveHandshakeFailure(tlsbridge.ReasonTimeout)
		_ = p.State(now)
	})
	if n != 0 {
		t.Fatalf("%v allocations per run", n)
	}
}
