package pool

import (
	"strings"
	"testing"
	"time"
)

// TestLeastTime: least_time picks the least average time by the active
// connections plus one, over the weight; peers not measured yet go first;
// ties go by weighted round robin; the measure is the one the directive
// names; backup servers serve when the primaries cannot.
func TestLeastTime(t *testing.T) {
	peerOf := func(g *Group, name string) *Peer {
		for _, p := range g.Peers() {
			if p.Host == name {
				return p
			}
		}
		t.Fatalf("no peer %s", name)
		return nil
	}
	for _, tc := range []struct {
		name    string
		measure string
		times   map[string]time.Duration // fed to the measure
		other   map[string]time.Duration // fed to another measure
		servers []ServerConfig
		held    int // sessions picked and held
		want    string
	}{
		{"fastest first, then by load", LeastTimeConnect,
			map[string]time.Duration{"a": 10 * time.Millisecond, "b": time.Millisecond, "c": 5 * time.Millisecond}, nil,
			[]ServerConfig{srv("a"), srv("b"), srv("c")}, 8,
			// b (1ms) until 1ms x 5 passes c's 5ms x 1, then b again
			// (5ms x 1 ahead of c's 5ms x 2).
			"bbbbcbbb"},
		{"unmeasured first", LeastTimeFirstByte,
			map[string]time.Duration{"a": time.Millisecond, "b": time.Millisecond}, nil,
			[]ServerConfig{srv("a"), srv("b"), srv("c")}, 1, "c"},
		{"the named measure only", LeastTimeLastByte,
			map[string]time.Duration{"a": 50 * time.Millisecond, "b": time.Millisecond},
			map[string]time.Duration{"a": time.Millisecond, "b": 50 * time.Millisecond},
			[]ServerConfig{srv("a"), srv("b")}, 1, "b"},
		{"weight divides", LeastTimeConnect,
			map[string]time.Duration{"a": 4 * time.Millisecond, "b": 2 * time.Millisecond}, nil,
			[]ServerConfig{srv("a", "w=4"), srv("b")}, 1, "a"},
		{"ties are weighted round robin", LeastTimeConnect,
			map[string]time.Duration{"a": time.Millisecond, "b": time.Millisecond}, nil,
			[]ServerConfig{srv("a"), srv("b")}, 0, "abab"},
		{"backup", LeastTimeConnect, nil, nil,
			[]ServerConfig{srv("a", "mc=1"), srv("b", "backup", "mc=1")}, 3, "ab-"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newTestGroup(t, BalancerConfig{Method: MethodLeastTime, LeastTime: tc.measure}, tc.servers...)
			other := LeastTimeConnect
			if tc.measure == LeastTimeConnect {
				other = LeastTimeLastByte
			}
			for name, d := range tc.times {
				observeMeasure(peerOf(g, name), tc.measure, d)
			}
			for name, d := range tc.other {
				observeMeasure(peerOf(g, name), other, d)
			}
			var got strings.Builder
			if tc.held == 0 {
				got.WriteString(sessions(g, "", len(tc.want), t0))
			}
			for range tc.held {
				got.WriteString(host(g.NewSelection("", 0, t0).Next(t0)))
			}
			if got.String() != tc.want {
				t.Errorf("got %s, want %s", got.String(), tc.want)
			}
		})
	}
	if _, err := NewGroup(GroupConfig{Name: "u", Servers: []ServerConfig{srv("a")}, Balancer: BalancerConfig{Method: MethodLeastTime, LeastTime: "header"}}, fakeResolve); err == nil {
		t.Error("least_time header accepted")
	}
}

// observeMeasure feeds d to p's average of m (directly: the first sample
// sets it).
func observeMeasure(p *Peer, m string, d time.Duration) {
	switch m {
	case LeastTimeConnect:
		p.ObserveConnectTime(d)
	case LeastTimeFirstByte:
		p.ObserveFirstByte(d)
	case LeastTimeLastByte:
		p.ObserveLastByte(time.Now().Add(-d))
	}
}

// TestEWMA: the average starts at the first sample and moves an eighth of
// the way to each next one.
func TestEWMA(t *testing.T) {
	var pt peerTimes
	pt.observe(80 * time.Millisecond)
	pt.observe(160 * time.Millisecond)
	if got := time.Duration(pt.avg.Load()); got != 90*time.Millisecond {
		t.Errorf("average %v, want 90ms", got)
	}
}

// TestLeastTimeKept: only a least_time group's peers keep a time, only
// their group's measure; a reload that keeps a peer keeps its average.
func TestLeastTimeKept(t *testing.T) {
	rr := newTestGroup(t, BalancerConfig{}, srv("a"))
	p := rr.Peers()[0]
	p.ObserveConnectTime(time.Millisecond)
	p.ObserveFirstByte(time.Millisecond)
	p.ObserveLastByte(time.Now().Add(-time.Millisecond))
	if v := p.times.avg.Load(); v != 0 {
		t.Errorf("a round-robin peer keeps a time, %v", time.Duration(v))
	}
	lt := BalancerConfig{Method: MethodLeastTime, LeastTime: LeastTimeFirstByte}
	old := newTestGroup(t, lt, srv("a"), srv("b"))
	for _, q := range old.Peers() {
		q.ObserveFirstByte(7 * time.Millisecond)
		q.ObserveConnectTime(time.Millisecond)
	}
	// The connect times were dropped: the average is first_byte's.
	if fb := old.Peers()[0].times.avg.Load(); fb != int64(7*time.Millisecond) {
		t.Errorf("a least_time first_byte peer keeps %v, want first_byte's 7ms and no connect time", time.Duration(fb))
	}
	next := newTestGroup(t, lt, srv("a"), srv("b"), srv("c"))
	next.Inherit(old)
	for _, q := range next.Peers() {
		want := int64(7 * time.Millisecond)
		if q.Host == "c" {
			want = 0
		}
		if got := q.times.avg.Load(); got != want {
			t.Errorf("after the reload, %s's average is %v, want %v", q.Host, time.Duration(got), time.Duration(want))
		}
	}
}
