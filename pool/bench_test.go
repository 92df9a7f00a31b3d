package pool

import (
	"strconv"
	"testing"
	"time"
)

var benchBalancers = []struct {
	name string
	bc   BalancerConfig
}{
	{"rr", BalancerConfig{}},
	{"least_conn", BalancerConfig{Method: MethodLeastConn}},
	{"hash", BalancerConfig{Method: MethodHash, Key: "$remote_addr"}},
	{"chash", BalancerConfig{Method: MethodHash, Key: "$remote_addr", Consistent: true}},
	{"random", BalancerConfig{Method: MethodRandom}},
	{"random_two", BalancerConfig{Method: MethodRandom, Two: true, LeastConn: true}},
}

// benchGroup has n servers with weights 1..4 and max_fails=0, so that
// failures never ban them.
func benchGroup(tb testing.TB, bc BalancerConfig, n int) *Group {
	servers := make([]ServerConfig, n)
	for i := range servers {
		servers[i] = NewServerConfig("10.0." + strconv.Itoa(i/250) + "." + strconv.Itoa(1+i%250) + ":443")
		servers[i].Weight = 1 + i%4
		servers[i].MaxFails = 0
	}
	g, err := NewGroup(GroupConfig{Name: "bench", Servers: servers, Balancer: bc}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return g
}

// BenchmarkNext measures a session's selection: InitSelection into a reused
// Selection, Next, Connected, Release.
func BenchmarkNext(b *testing.B) {
	for _, n := range []int{8, 200} {
		for _, bb := range benchBalancers {
			b.Run(bb.name+"/"+strconv.Itoa(n), func(b *testing.B) {
				g := benchGroup(b, bb.bc, n)
				now := time.Now()
				var s Selection
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					i++
					g.InitSelection(&s, "10.9.8."+strconv.Itoa(i&7), 0, now)
					p, err := s.Next(now)
					if err != nil {
						b.Fatal(err)
					}
					s.Connected(p, now)
					s.Release(p)
				}
			})
		}
	}
}

// BenchmarkNextParallel measures the same with every CPU's sessions sharing
// the group's lock, as the event loops do.
func BenchmarkNextParallel(b *testing.B) {
	for _, bb := range benchBalancers {
		b.Run(bb.name, func(b *testing.B) {
			g := benchGroup(b, bb.bc, 8)
			now := time.Now()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				var s Selection
				for pb.Next() {
					g.InitSelection(&s, "10.9.8.7", 0, now)
					p, err := s.Next(now)
					if err != nil {
						b.Error(err)
						return
					}
					s.Release(p)
				}
			})
		})
	}
}

func TestNextDoesNotAllocate(t *testing.T) {
	if testing.CoverMode() != "" {
		t.Skip("coverage instrumentation allocates")
	}
	for _, bb := range benchBalancers {
		g := benchGroup(t, bb.bc, 8)
		now := time.Now()
		var s Selection
		g.InitSelection(&s, "warm-up-key", 0, now) // grows the key buffer once
		allocs := testing.AllocsPerRun(100, func() {
			g.InitSelection(&s, "10.9.8.7", 0, now)
			p, err := s.Next(now)
			if err != nil {
				t.Fatal(err)
			}
			s.Failed(p, now)
			if p, err = s.Next(now); err == nil {
				s.Connected(p, now)
				s.Release(p)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %.1f allocations per session, want 0", bb.name, allocs)
		}
	}
}

func TestLargeGroup(t *testing.T) {
	// More than 128 peers: the tried bitmap grows; every peer is tried once.
	for _, bb := range benchBalancers {
		g := benchGroup(t, bb.bc, 200)
		var s Selection
		for range 2 { // the second run reuses the Selection's bitmap
			g.InitSelection(&s, "k", 0, t0)
			seen := make(map[*Peer]bool)
			for {
				p, err := s.Next(t0)
				if err != nil {
					t.Fatalf("%s: after %d peers: %v", bb.name, len(seen), err)
				}
				if seen[p] {
					t.Fatalf("%s: %v returned twice", bb.name, p)
				}
				seen[p] = true
				s.Failed(p, t0)
				if s.TriesLeft() == 0 {
					break
				}
			}
			if len(seen) != 200 {
				t.Errorf("%s: tried %d peers, want 200", bb.name, len(seen))
			}
		}
	}
}
