package pool

import (
	"testing"
	"time"
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

// TestPeerRecordNoAlloc: the record methods the data path calls allocate
// nothing.
func TestPeerRecordNoAlloc(t *testing.T) {
	g, err := NewGroup(GroupConfig{Name: "g", Servers: []ServerConfig{NewServerConfig("10.0.0.1:443")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := g.Peers()[0]
	now := time.Now()
	n := testing.AllocsPerRun(1000, func() {
		p.ObserveConnect(time.Millisecond)
		p.ObserveHandshake(3*time.Millisecond, true)
		p.ObserveHandshake(3*time.Millisecond, false)
		p.ObserveHandshakeFailure(FailureClasses - 1)
		_ = p.State(now)
	})
	if n != 0 {
		t.Fatalf("%v allocations per run", n)
	}
}
