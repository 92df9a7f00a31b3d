package pool

import (
	"errors"
	"testing"
	"time"
)

func carryGroup(t *testing.T, servers ...ServerConfig) *Group {
	t.Helper()
	g, err := NewGroup(GroupConfig{Name: "backend", Servers: servers}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestSameAs(t *testing.T) {
	a, b := NewServerConfig("127.0.0.1:1001"), NewServerConfig("127.0.0.1:1002")
	heavy := b
	heavy.Weight = 5
	base := carryGroup(t, a, b)
	for _, tc := range []struct {
		name string
		g    *Group
		want bool
	}{
		{"same", carryGroup(t, a, b), true},
		{"order", carryGroup(t, b, a), false},
		{"weight", carryGroup(t, a, heavy), false},
		{"fewer", carryGroup(t, a), false},
	} {
		if got := tc.g.SameAs(base); got != tc.want {
			t.Errorf("%s: SameAs = %v, want %v", tc.name, got, tc.want)
		}
	}
	lc, err := NewGroup(GroupConfig{Name: "backend", Servers: []ServerConfig{a, b}, Balancer: BalancerConfig{Method: MethodLeastConn}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lc.SameAs(base) {
		t.Error("a least_conn group is the same as a round-robin one")
	}
}

// TestInherit: a peer banned in the old group stays banned in the new one
// for the rest of its fail_timeout, and its counters go on.
func TestInherit(t *testing.T) {
	a, b, c := NewServerConfig("127.0.0.1:1001"), NewServerConfig("127.0.0.1:1002"), NewServerConfig("127.0.0.1:1003")
	old := carryGroup(t, a, b)
	now := time.Now()
	sel := old.NewSelection("", 0, now)
	p, err := sel.Next(now)
	if err != nil {
		t.Fatal(err)
	}
	sel.Failed(p, now) // max_fails 1: p is banned for fail_timeout
	sel.Release(p)
	banned := p.Name

	g := carryGroup(t, a, b, c) // changed: one server more
	g.Inherit(old)
	for _, q := range g.Peers() {
		switch q.Name {
		case banned:
			if q.Fails() != 1 || q.State(now.Add(time.Second)) != PeerBanned {
				t.Errorf("%s: fails %d, state %v after inherit; want banned", q.Name, q.Fails(), q.State(now.Add(time.Second)))
			}
			if q.Selected() != 1 || q.Failures() != 1 {
				t.Errorf("%s: counters selected %d failures %d, want 1 and 1", q.Name, q.Selected(), q.Failures())
			}
		default:
			if q.Fails() != 0 {
				t.Errorf("%s: fails %d, want 0", q.Name, q.Fails())
			}
		}
	}
	// New sessions skip the banned peer.
	for i := 0; i < 4; i++ {
		s := g.NewSelection("", 0, now.Add(time.Second))
		q, err := s.Next(now.Add(time.Second))
		if err != nil && !errors.Is(err, ErrNoLivePeers) {
			t.Fatal(err)
		}
		if q != nil && q.Name == banned {
			t.Fatalf("session %d got the banned peer %s", i, banned)
		}
		if q != nil {
			s.Release(q)
		}
	}
}

// TestInheritAfterSetWeight: a weight changed at run time is dropped by a
// reload that rebuilds the group, and the peer keeps its state and
// counters all the same (it is the same server as configured).
func TestInheritAfterSetWeight(t *testing.T) {
	old := newTestGroup(t, BalancerConfig{}, srv("a"), srv("b"))
	a := old.Peers()[0]
	if err := old.SetWeight(a, 5); err != nil {
		t.Fatal(err)
	}
	s := old.NewSelection("", 0, t0)
	p, _ := s.Next(t0)
	s.Release(p)
	next := newTestGroup(t, BalancerConfig{}, srv("a"), srv("b"), srv("c"))
	next.Inherit(old)
	na := next.Peers()[0]
	if na.Weight != 1 || na.Selected() != a.Selected() || a.Selected() == 0 {
		t.Errorf("after the reload: weight %d, selected %d (before %d); want 1 and the counters carried", na.Weight, na.Selected(), a.Selected())
	}
	// The run-time weight is not carried into the balancing either:
	// with weights 1, 1, 1 each peer gets a third of the picks.
	picks := map[*Peer]int{}
	for range 30 {
		s := next.NewSelection("", 0, t0)
		p, _ := s.Next(t0)
		picks[p]++
		s.Release(p)
	}
	if picks[na] != 10 {
		t.Errorf("after the reload a got %d of 30 picks, want 10 (weights 1, 1, 1)", picks[na])
	}
	if err := newTestGroup(t, BalancerConfig{Method: MethodHash, Key: "$remote_addr"}, srv("a")).SetWeight(a, 2); !errors.Is(err, errWeightFixed) {
		t.Errorf("SetWeight on a hash group: %v", err)
	}
}
