package pool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestHealthChecker: a peer whose probes fail is out after fails=2, no
// selection picks it, it is back after passes=2 successes, and a checker
// that stops releases the peers it held out.
func TestHealthChecker(t *testing.T) {
	g, err := NewGroup(GroupConfig{Name: "b", Servers: []ServerConfig{
		NewServerConfig("127.0.0.1:1"), NewServerConfig("127.0.0.2:1"),
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	bad := g.Peers()[1]
	var failing atomic.Bool
	failing.Store(true)
	events := make(chan bool, 16)
	var mu sync.Mutex
	var lines []string
	h := NewHealthChecker(g, HealthConfig{
		Interval: time.Millisecond, Fails: 2, Passes: 2, Timeout: time.Second,
		Probe: func(ctx context.Context, p *Peer) error {
			if p == bad && failing.Load() {
				return errors.New("refused")
			}
			return nil
		},
		Logf: func(up bool, format string, args ...any) {
			mu.Lock()
			lines = append(lines, format)
			mu.Unlock()
			events <- up
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { h.Run(ctx); close(stopped) }()

	if up := <-events; up {
		t.Fatal("first state change is up, want down")
	}
	if !bad.Unhealthy() || bad.State(time.Now()) != PeerUnhealthy || g.Peers()[0].Unhealthy() {
		t.Fatalf("states: bad %v good %v", bad.State(time.Now()), g.Peers()[0].State(time.Now()))
	}
	if _, failed := bad.HealthChecks(); failed < 2 {
		t.Fatalf("failed probes %d, want >= 2", failed)
	}
	for range 10 {
		s := g.NewSelection("", 0, time.Now())
		p, err := s.Next(time.Now())
		if err != nil || p == bad {
			t.Fatalf("selection gave %v, %v", p, err)
		}
		s.Release(p)
	}
	failing.Store(false)
	if up := <-events; !up {
		t.Fatal("second state change is down, want up")
	}
	if bad.Unhealthy() {
		t.Fatal("peer still out after passes")
	}
	failing.Store(true)
	if up := <-events; up {
		t.Fatal("want down again")
	}
	h.Stop()
	if bad.Unhealthy() {
		t.Fatal("a stopped checker still holds the peer out")
	}
	cancel()
	<-stopped
	if bad.Unhealthy() {
		t.Fatal("the peer is out after Run returned")
	}
}

// TestHealthRunEnds: a checker whose context ends releases its peers
// when Run returns (mandatory starts peers out); after Hold it keeps them
// out (a graceful quit's groups stay as last probed), a probe that ends
// then changes no state, and Stop releases them.
func TestHealthRunEnds(t *testing.T) {
	for _, hold := range []bool{false, true} {
		t.Run(fmt.Sprintf("hold=%v", hold), func(t *testing.T) {
			g, err := NewGroup(GroupConfig{Name: "b", Servers: []ServerConfig{NewServerConfig("127.0.0.1:1")}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			p := g.Peers()[0]
			probed := make(chan struct{})
			ctx, cancel := context.WithCancel(context.Background())
			h := NewHealthChecker(g, HealthConfig{Mandatory: true, Interval: time.Hour,
				Probe: func(ctx context.Context, _ *Peer) error {
					close(probed)
					<-ctx.Done() // hangs until the checker is cancelled
					return nil   // a pass, but too late to count
				}})
			stopped := make(chan struct{})
			go func() { h.Run(ctx); close(stopped) }()
			<-probed
			if !p.Unhealthy() {
				t.Fatal("mandatory: the peer is in before its first probe passed")
			}
			if hold {
				h.Hold()
			}
			cancel()
			<-stopped
			if p.Unhealthy() != hold {
				t.Fatalf("after Run returned: out %v, want %v", p.Unhealthy(), hold)
			}
			if !hold {
				return
			}
			if h.setOut(p, false) {
				t.Fatal("a state changed after Hold")
			}
			h.Stop()
			if p.Unhealthy() {
				t.Fatal("the peer is out after Stop")
			}
		})
	}
}

// TestHealthAllOut: with every peer out the group has no live upstreams.
func TestHealthAllOut(t *testing.T) {
	g, err := NewGroup(GroupConfig{Name: "one", Servers: []ServerConfig{NewServerConfig("127.0.0.1:1")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	g.Peers()[0].stats.health.down.Add(1)
	if _, err := g.NewSelection("", 0, time.Now()).Next(time.Now()); !errors.Is(err, ErrNoLivePeers) {
		t.Fatalf("Next: %v, want ErrNoLivePeers", err)
	}
}

// TestHealthEveryBalancer: no balancing method picks a peer held out.
func TestHealthEveryBalancer(t *testing.T) {
	for _, b := range []BalancerConfig{
		{}, {Method: MethodLeastConn}, {Method: MethodHash, Key: "k"}, {Method: MethodHash, Key: "k", Consistent: true},
		{Method: MethodRandom}, {Method: MethodRandom, Two: true},
	} {
		g, err := NewGroup(GroupConfig{Name: "b", Balancer: b, Servers: []ServerConfig{
			NewServerConfig("127.0.0.1:1"), NewServerConfig("127.0.0.2:1"), NewServerConfig("127.0.0.3:1"),
		}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		out := g.Peers()[1]
		out.stats.health.down.Add(1)
		for i := range 50 {
			s := g.NewSelection(fmt.Sprint("key", i), 0, time.Now())
			p, err := s.Next(time.Now())
			if err != nil || p == out {
				t.Fatalf("%+v: selection %d gave %v, %v", b, i, p, err)
			}
			s.Release(p)
		}
	}
}
