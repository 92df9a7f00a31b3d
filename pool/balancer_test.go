package pool

import (
	"context"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Servers in these tests are named by one letter, "a:80" ... and resolved by
// fakeResolve to 10.0.0.1 ...; a name with a digit after the letter ("m2")
// resolves to that many addresses.

func fakeResolve(_ context.Context, host string) ([]netip.Addr, error) {
	if host == "" || host[0] < 'a' || host[0] > 'z' {
		return nil, errors.New("no such host")
	}
	n := 1
	if len(host) > 1 {
		n, _ = strconv.Atoi(host[1:])
	}
	var out []netip.Addr
	for i := range n {
		out = append(out, netip.AddrFrom4([4]byte{10, 0, host[0] - 'a' + 1, byte(i + 1)}))
	}
	return out, nil
}

// srv returns a server line for letter name with NGINX's defaults, then
// applies opts: "w=N", "mf=N", "ft=DUR", "mc=N", "down", "backup".
func srv(name string, opts ...string) ServerConfig {
	sc := NewServerConfig(name + ":80")
	for _, o := range opts {
		k, v, _ := strings.Cut(o, "=")
		n, _ := strconv.Atoi(v)
		switch k {
		case "w":
			sc.Weight = n
		case "mf":
			sc.MaxFails = n
		case "mc":
			sc.MaxConns = n
		case "ft":
			sc.FailTimeout, _ = time.ParseDuration(v)
		case "down":
			sc.Down = true
		case "backup":
			sc.Backup = true
		default:
			panic("srv: " + o)
		}
	}
	return sc
}

func newTestGroup(t testing.TB, bc BalancerConfig, servers ...ServerConfig) *Group {
	t.Helper()
	g, err := NewGroup(GroupConfig{Name: "backend", Servers: servers, Balancer: bc, Rand: rand.NewPCG(1, 2)}, fakeResolve)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// host returns the peer's host's letter, or "-" for an error.
func host(p *Peer, err error) string {
	if err != nil {
		return "-"
	}
	return p.Host[:1]
}

// sessions runs n successful sessions one after the other (each released
// before the next starts) and returns the hosts that served them.
func sessions(g *Group, key string, n int, now time.Time) string {
	var b strings.Builder
	for range n {
		s := g.NewSelection(key, 0, now)
		p, err := s.Next(now)
		b.WriteString(host(p, err))
		if err == nil {
			s.Connected(p, now)
			s.Release(p)
		}
	}
	return b.String()
}

var t0 = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

func TestRoundRobinWeights(t *testing.T) {
	tests := []struct {
		name    string
		servers []ServerConfig
		want    string
	}{
		{"5-1-1", []ServerConfig{srv("a", "w=5"), srv("b"), srv("c")}, "aabacaa" + "aabacaa"},
		{"3-2-1-1", []ServerConfig{srv("a", "w=3"), srv("b", "w=2"), srv("c"), srv("d")}, "abcadba" + "abcadba"},
		{"equal", []ServerConfig{srv("a"), srv("b"), srv("c")}, "abcabc"},
		{"down", []ServerConfig{srv("a", "w=2"), srv("b", "w=3", "down"), srv("c"), srv("d")}, "acdaacda"},
		{"one name two addresses", []ServerConfig{srv("m2", "w=2"), srv("b")}, "mmbmm" + "mmbmm"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := newTestGroup(t, BalancerConfig{}, tc.servers...)
			if got := sessions(g, "", len(tc.want), t0); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestRoundRobinFailuresAndBans(t *testing.T) {
	g := newTestGroup(t, BalancerConfig{}, srv("a"), srv("b"), srv("c"))
	now := t0

	// a fails: the session moves on to the next peer, and a is banned for
	// fail_timeout (10s).
	s := g.NewSelection("", 0, now)
	if s.TriesLeft() != 3 {
		t.Fatalf("TriesLeft = %d, want 3", s.TriesLeft())
	}
	p, _ := s.Next(now)
	if p.Host != "a" {
		t.Fatalf("first pick %s, want a", p.Host)
	}
	if !s.Failed(p, now) {
		t.Errorf("Failed did not report a disabled (max_fails=1)")
	}
	if s.TriesLeft() != 2 || p.Fails() != 1 || p.Conns() != 0 {
		t.Errorf("after failure: TriesLeft %d Fails %d Conns %d, want 2 1 0", s.TriesLeft(), p.Fails(), p.Conns())
	}
	p, _ = s.Next(now)
	if p.Host != "b" {
		t.Fatalf("retry picked %s, want b", p.Host)
	}
	s.Connected(p, now)
	s.Release(p)

	if got := sessions(g, "", 4, now.Add(5*time.Second)); got != "cbcb" {
		t.Errorf("while a is banned: %s, want cbcb", got)
	}
	if got := sessions(g, "", 1, now.Add(10*time.Second)); got != "c" {
		t.Errorf("at exactly fail_timeout a is still banned: %s, want c", got)
	}
	// After fail_timeout a gets a probe; its effective weight was dropped to
	// 0 (weight/max_fails = 1) and is back to 1.
	later := now.Add(11 * time.Second)
	a := g.Peers()[0]
	var seen bool
	for range 8 {
		s := g.NewSelection("", 0, later)
		p, _ := s.Next(later)
		if p == a {
			seen = true
			s.Connected(p, later)
			if a.Fails() != 0 {
				t.Errorf("probe succeeded but Fails = %d", a.Fails())
			}
		}
		s.Release(p)
	}
	if !seen {
		t.Errorf("a was not probed after fail_timeout")
	}
}

func TestEffectiveWeightRecovery(t *testing.T) {
	// a (weight 4, max_fails 2) fails once: effective weight 4-2=2, then +1
	// per selection pass, as NGINX.
	g := newTestGroup(t, BalancerConfig{}, srv("a", "w=4", "mf=2"), srv("b", "w=4", "mf=2"))
	s := g.NewSelection("", 0, t0)
	p, _ := s.Next(t0)
	s.Failed(p, t0)
	s.Release(must(s.Next(t0)))
	a := g.Peers()[0]
	if a.effectiveWeight != 2 {
		t.Fatalf("effective weight after failure = %d, want 2", a.effectiveWeight)
	}
	if got := sessions(g, "", 8, t0); got != "bbababab" {
		// Not banned (1 of 2 fails): a comes back gradually (3, then 4).
		t.Errorf("recovery sequence %s, want bbababab", got)
	}
	if a.effectiveWeight != 4 {
		t.Errorf("effective weight after recovery = %d, want 4", a.effectiveWeight)
	}
}

func must(p *Peer, err error) *Peer {
	if err != nil {
		panic(err)
	}
	return p
}

func TestMaxFailsWindow(t *testing.T) {
	// max_fails=2 fail_timeout=10s: two failures within the window ban; a
	// success after the window reopened forgets the old failure.
	g := newTestGroup(t, BalancerConfig{}, srv("a", "mf=2", "ft=10s"), srv("b", "mf=2", "ft=10s"))
	a := g.Peers()[0]
	fail := func(now time.Time) {
		t.Helper()
		s := g.NewSelection("", 0, now)
		for {
			p, err := s.Next(now)
			if err != nil {
				t.Fatal(err)
			}
			if p == a {
				s.Failed(p, now)
				return
			}
			s.Release(p)
			s = g.NewSelection("", 0, now)
		}
	}
	fail(t0)
	if a.Fails() != 1 {
		t.Fatalf("Fails = %d, want 1", a.Fails())
	}
	// A success within the window does not reset the count...
	sessions(g, "", 4, t0.Add(time.Second))
	if a.Fails() != 1 {
		t.Fatalf("Fails after success in window = %d, want 1", a.Fails())
	}
	// ...one after it does (the selection opened a new window).
	sessions(g, "", 4, t0.Add(12*time.Second))
	if a.Fails() != 0 {
		t.Fatalf("Fails after success past window = %d, want 0", a.Fails())
	}
	fail(t0.Add(20 * time.Second))
	fail(t0.Add(21 * time.Second))
	if got := sessions(g, "", 3, t0.Add(22*time.Second)); got != "bbb" {
		t.Errorf("after 2 failures: %s, want bbb", got)
	}
}

func TestBackupFailover(t *testing.T) {
	g := newTestGroup(t, BalancerConfig{}, srv("a"), srv("b", "down"), srv("c", "backup"), srv("d", "w=2", "backup"))
	if g.Tries() != 3 {
		t.Errorf("Tries = %d, want 3 (a, c, d; b is down)", g.Tries())
	}
	// a serves while alive.
	if got := sessions(g, "", 3, t0); got != "aaa" {
		t.Errorf("primary alive: %s, want aaa", got)
	}
	// a fails: the same session continues on the backups.
	s := g.NewSelection("", 0, t0)
	p, _ := s.Next(t0)
	s.Failed(p, t0)
	p, _ = s.Next(t0)
	if p.Host != "d" {
		t.Errorf("after primary failure: %s, want d", p.Host)
	}
	s.Failed(p, t0)
	p, _ = s.Next(t0)
	if p.Host != "c" {
		t.Errorf("after d failure: %s, want c", p.Host)
	}
	s.Release(p)
	// a and d banned: c serves.
	if got := sessions(g, "", 3, t0.Add(time.Second)); got != "ccc" {
		t.Errorf("primary banned: %s, want ccc", got)
	}
	// After fail_timeout the primary is back.
	if got := sessions(g, "", 2, t0.Add(11*time.Second)); got != "aa" {
		t.Errorf("primary recovered: %s, want aa", got)
	}
}

func TestBackupRoundRobin(t *testing.T) {
	g := newTestGroup(t, BalancerConfig{}, srv("a", "down"), srv("c", "backup"), srv("d", "w=2", "backup"))
	if got := sessions(g, "", 6, t0); got != "dcddcd" {
		t.Errorf("backups: %s, want dcddcd", got)
	}
}

func TestMaxConns(t *testing.T) {
	g := newTestGroup(t, BalancerConfig{}, srv("a", "mc=1"), srv("b", "mc=2"))
	var held []*Peer
	var got strings.Builder
	for range 4 {
		s := g.NewSelection("", 0, t0)
		p, err := s.Next(t0)
		got.WriteString(host(p, err))
		if err == nil {
			held = append(held, p)
		} else if !errors.Is(err, ErrNoLivePeers) {
			t.Errorf("error %v does not wrap ErrNoLivePeers", err)
		}
	}
	if got.String() != "abb-" {
		t.Errorf("holding connections: %s, want abb-", got.String())
	}
	s := g.NewSelection("", 0, t0)
	s.Release(held[0])
	if p, err := s.Next(t0); host(p, err) != "a" {
		t.Errorf("after release: %s, want a", host(p, err))
	}

	single := newTestGroup(t, BalancerConfig{}, srv("a", "mc=1"))
	s1 := single.NewSelection("", 0, t0)
	must(s1.Next(t0))
	if _, err := single.NewSelection("", 0, t0).Next(t0); !errors.Is(err, ErrNoLivePeers) {
		t.Errorf("single server at max_conns: %v, want ErrNoLivePeers", err)
	}
}

func TestTriesLimit(t *testing.T) {
	servers := []ServerConfig{srv("a"), srv("b"), srv("c"), srv("d"), srv("e", "down")}
	for _, tc := range []struct{ tries, want int }{{0, 4}, {2, 2}, {9, 4}} {
		g := newTestGroup(t, BalancerConfig{}, servers...)
		s := g.NewSelection("", tc.tries, t0)
		n := 0
		for {
			p, err := s.Next(t0)
			if err != nil {
				if !errors.Is(err, ErrNoTriesLeft) && !errors.Is(err, ErrNoLivePeers) {
					t.Errorf("tries=%d: unexpected error %v", tc.tries, err)
				}
				break
			}
			n++
			s.Failed(p, t0)
			if s.TriesLeft() == 0 {
				if _, err := s.Next(t0); !errors.Is(err, ErrNoTriesLeft) {
					t.Errorf("tries=%d: Next after the last try: %v", tc.tries, err)
				}
				break
			}
		}
		if n != tc.want || s.Tried() != tc.want {
			t.Errorf("tries=%d: %d attempts (Tried %d), want %d", tc.tries, n, s.Tried(), tc.want)
		}
	}
}

func TestSingleServer(t *testing.T) {
	// NGINX: one server is never marked down, and a failure leaves no try.
	g := newTestGroup(t, BalancerConfig{}, srv("a", "mf=1"))
	for i := range 3 {
		s := g.NewSelection("", 0, t0)
		p, err := s.Next(t0)
		if err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		if s.Failed(p, t0) {
			t.Errorf("single server reported disabled")
		}
		if s.TriesLeft() != 0 || p.Fails() != 0 {
			t.Errorf("after failure: TriesLeft %d Fails %d, want 0 0", s.TriesLeft(), p.Fails())
		}
	}
	down := newTestGroup(t, BalancerConfig{}, srv("a", "down"))
	_, err := down.NewSelection("", 0, t0).Next(t0)
	if err == nil || err.Error() != `no live upstreams while connecting to upstream "backend"` {
		t.Errorf("down single server: %v", err)
	}
}

func TestImplicitGroup(t *testing.T) {
	g, err := NewGroup(GroupConfig{Name: "m2:443", Implicit: true, Servers: []ServerConfig{{Addr: "m2:443", Weight: 7, Down: true}}}, fakeResolve)
	if err != nil {
		t.Fatal(err)
	}
	ps := g.Peers()
	if len(ps) != 2 {
		t.Fatalf("%d peers, want 2", len(ps))
	}
	for _, p := range ps {
		if p.Weight != 1 || p.MaxFails != 1 || p.FailTimeout != 10*time.Second || p.Down || p.Host != "m2" || p.Name != "m2:443" {
			t.Errorf("implicit peer %+v", p)
		}
	}
	if ps[0].Addr.String() != "10.0.13.1:443" || ps[1].Addr.String() != "10.0.13.2:443" {
		t.Errorf("addresses %v %v", ps[0].Addr, ps[1].Addr)
	}
}

func TestNewGroupErrors(t *testing.T) {
	tests := []struct {
		name string
		gc   GroupConfig
		want string
	}{
		{"no servers", GroupConfig{Name: "u"}, `no servers in upstream "u"`},
		{"only backups", GroupConfig{Name: "u", Servers: []ServerConfig{srv("a", "backup")}}, `no servers in upstream "u"`},
		{"unknown host", GroupConfig{Name: "u", Servers: []ServerConfig{srv("9")}}, `host not found in upstream "9:80"`},
		{"bad port", GroupConfig{Name: "u", Servers: []ServerConfig{{Addr: "a:http"}}}, `invalid port in "a:http"`},
		{"no port", GroupConfig{Name: "u", Servers: []ServerConfig{{Addr: "a"}}}, `missing port`},
		{"backup with hash", GroupConfig{Name: "u", Balancer: BalancerConfig{Method: MethodHash, Key: "k"},
			Servers: []ServerConfig{srv("a"), srv("b", "backup")}}, `backup servers are not allowed`},
		{"backup with random", GroupConfig{Name: "u", Balancer: BalancerConfig{Method: MethodRandom},
			Servers: []ServerConfig{srv("a"), srv("b", "backup")}}, `backup servers are not allowed`},
		{"method", GroupConfig{Name: "u", Balancer: BalancerConfig{Method: "ip_hash"}, Servers: []ServerConfig{srv("a")}}, `unknown balancing method "ip_hash"`},
		{"weight", GroupConfig{Name: "u", Servers: []ServerConfig{srv("a", "w=-1")}}, `invalid weight`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewGroup(tc.gc, fakeResolve)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestResolveOrder(t *testing.T) {
	resolve := func(context.Context, string) ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("::1"), netip.MustParseAddr("::ffff:10.0.0.2"), netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.1")}, nil
	}
	g, err := NewGroup(GroupConfig{Name: "u", Servers: []ServerConfig{NewServerConfig("db.example:5432"), NewServerConfig("[::2]:5432")}}, resolve)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range g.Peers() {
		got = append(got, p.Addr.String()+"/"+p.Host)
	}
	want := "10.0.0.2:5432/db.example 10.0.0.1:5432/db.example [::1]:5432/db.example [::2]:5432/::2"
	if strings.Join(got, " ") != want {
		t.Errorf("peers %v, want %s", got, want)
	}
}

func TestLeastConn(t *testing.T) {
	bc := BalancerConfig{Method: MethodLeastConn}
	t.Run("ties are weighted round robin", func(t *testing.T) {
		g := newTestGroup(t, bc, srv("a", "w=3"), srv("b"), srv("c"))
		if got := sessions(g, "", 10, t0); got != "abacaabaca" {
			t.Errorf("got %s, want abacaabaca", got)
		}
	})
	t.Run("fewest conns per weight", func(t *testing.T) {
		g := newTestGroup(t, bc, srv("a", "w=2"), srv("b"), srv("c"))
		var got strings.Builder
		for range 8 { // hold every connection
			got.WriteString(host(g.NewSelection("", 0, t0).Next(t0)))
		}
		// conns/weight decides; equal ratios go by weighted round robin.
		if got.String() != "abcacaba" {
			t.Errorf("got %s, want abcacaba", got.String())
		}
	})
	t.Run("backup", func(t *testing.T) {
		g := newTestGroup(t, bc, srv("a", "mc=1"), srv("b", "backup"), srv("c", "backup"))
		var got strings.Builder
		for range 4 {
			got.WriteString(host(g.NewSelection("", 0, t0).Next(t0)))
		}
		if got.String() != "abcc" {
			t.Errorf("got %s, want abcc", got.String())
		}
	})
	t.Run("single", func(t *testing.T) {
		g := newTestGroup(t, bc, srv("a"))
		if got := sessions(g, "", 2, t0); got != "aa" {
			t.Errorf("got %s", got)
		}
	})
}

// memcachedHash is the Cache::Memcached formula, written out independently
// of the balancer: the peer index for the n-th (0-based) hash of key.
func memcachedPick(key string, weights []int, steps int) int {
	var acc uint32
	total := 0
	for _, w := range weights {
		total += w
	}
	for n := range steps + 1 {
		s := key
		if n > 0 {
			s = strconv.Itoa(n) + key
		}
		acc += (crc32.ChecksumIEEE([]byte(s)) >> 16) & 0x7fff
	}
	w := int(acc % uint32(total))
	for i, wi := range weights {
		if w < wi {
			return i
		}
		w -= wi
	}
	panic("unreachable")
}

func TestHash(t *testing.T) {
	bc := BalancerConfig{Method: MethodHash, Key: "$remote_addr"}
	weights := []int{1, 2, 1, 3}
	g := newTestGroup(t, bc, srv("a"), srv("b", "w=2"), srv("c"), srv("d", "w=3"))
	keys := []string{"10.1.1.1", "10.1.1.2", "192.168.0.7", "client-42", "x"}
	for _, k := range keys {
		want := string(rune('a' + memcachedPick(k, weights, 0)))
		for range 3 { // the same key always lands on the same server
			if got := sessions(g, k, 1, t0); got != want {
				t.Errorf("key %q: %s, want %s", k, got, want)
			}
		}
	}
	// Fixed answers (also checked against NGINX by TestNginxDifferential).
	if got := sessions(g, "10.1.1.1", 1, t0) + sessions(g, "10.1.1.2", 1, t0) + sessions(g, "192.168.0.7", 1, t0); got != "adc" {
		t.Errorf("fixed keys: %s, want adc", got)
	}

	// A down server: rehash until a usable one.
	down := newTestGroup(t, bc, srv("a"), srv("b", "w=2"), srv("c"), srv("d", "w=3", "down"))
	for _, k := range keys {
		steps := 0
		for memcachedPick(k, weights, steps) == 3 {
			steps++
		}
		want := string(rune('a' + memcachedPick(k, weights, steps)))
		if got := sessions(down, k, 1, t0); got != want {
			t.Errorf("key %q with d down: %s, want %s (after %d rehashes)", k, got, want, steps)
		}
	}

	// Retries within a session continue the rehash chain and skip tried peers.
	s := g.NewSelection("10.1.1.1", 0, t0)
	seen := map[string]bool{}
	for range 4 {
		p, err := s.Next(t0)
		if err != nil {
			t.Fatal(err)
		}
		if seen[p.Host] {
			t.Errorf("peer %s returned twice in one session", p.Host)
		}
		seen[p.Host] = true
		s.Failed(p, t0)
	}

	// Empty key: round robin.
	if got := sessions(newTestGroup(t, bc, srv("a"), srv("b")), "", 4, t0); got != "abab" {
		t.Errorf("empty key: %s, want abab", got)
	}
	// All down: after 20 rehashes, round robin, which finds nothing.
	all := newTestGroup(t, bc, srv("a", "down"), srv("b", "down"))
	if _, err := all.NewSelection("k", 0, t0).Next(t0); !errors.Is(err, ErrNoLivePeers) {
		t.Errorf("all down: %v", err)
	}
}

func TestConsistentHash(t *testing.T) {
	bc := BalancerConfig{Method: MethodHash, Key: "$remote_addr", Consistent: true}
	servers := []ServerConfig{srv("a"), srv("b", "w=2"), srv("c"), srv("d")}
	g := newTestGroup(t, bc, servers...)
	if n := len(g.set.Load().points); n != 5*160 {
		t.Errorf("ring has %d points, want %d", n, 5*160)
	}
	keys := make([]string, 400)
	for i := range keys {
		keys[i] = "10.0." + strconv.Itoa(i/250) + "." + strconv.Itoa(i%250)
	}
	before := map[string]string{}
	count := map[string]int{}
	for _, k := range keys {
		before[k] = sessions(g, k, 1, t0)
		count[before[k]]++
		if again := sessions(g, k, 1, t0); again != before[k] {
			t.Errorf("key %s moved from %s to %s", k, before[k], again)
		}
	}
	for _, h := range []string{"a", "b", "c", "d"} {
		if count[h] == 0 {
			t.Errorf("no key on %s: %v", h, count)
		}
	}
	// Fixed answers (also checked against NGINX by TestNginxDifferential).
	if got := sessions(g, "10.1.1.1", 1, t0) + sessions(g, "10.1.1.2", 1, t0) + sessions(g, "192.168.0.7", 1, t0); got != "dbc" {
		t.Errorf("fixed keys: %s, want dbc", got)
	}

	// Marking c down moves only c's keys.
	servers[2] = srv("c", "down")
	g2 := newTestGroup(t, bc, servers...)
	for _, k := range keys {
		after := sessions(g2, k, 1, t0)
		if before[k] != "c" && after != before[k] {
			t.Errorf("key %s moved from %s to %s though only c went down", k, before[k], after)
		}
		if after == "c" {
			t.Errorf("key %s on down server c", k)
		}
	}
}

func TestConsistentHashSharedName(t *testing.T) {
	// A name with two addresses is one server on the ring; its peers share
	// its keys by weighted round robin.
	g := newTestGroup(t, BalancerConfig{Method: MethodHash, Key: "k", Consistent: true}, srv("m2"), srv("b"))
	if n := len(g.set.Load().points); n != 2*160 {
		t.Errorf("ring has %d points, want %d (duplicates removed)", n, 2*160)
	}
	var addrs []string
	for range 4 {
		s := g.NewSelection("key-on-m", 0, t0)
		p, _ := s.Next(t0)
		addrs = append(addrs, p.Addr.Addr().String())
		s.Release(p)
	}
	t.Log(addrs)
}

func TestRing(t *testing.T) {
	for _, tc := range []struct{ name, host, port string }{
		{"127.0.0.1:8080", "127.0.0.1", "8080"},
		{"[::1]:80", "[::1]", "80"},
		{"unix:/tmp/s", "/tmp/s", ""},
		{"backend", "backend", ""},
		{"host:x1", "host:x1", ""},
	} {
		h, p := splitServerName(tc.name)
		if h != tc.host || p != tc.port {
			t.Errorf("splitServerName(%q) = %q, %q; want %q, %q", tc.name, h, p, tc.host, tc.port)
		}
	}
	// The first point of "127.0.0.1:8080" is crc32("127.0.0.1\x008080\x00\x00\x00\x00").
	pts := buildRing([]*Peer{{Name: "127.0.0.1:8080", Weight: 1}})
	first := crc32.ChecksumIEEE([]byte("127.0.0.1\x008080\x00\x00\x00\x00"))
	found := false
	for _, p := range pts {
		found = found || p.hash == first
	}
	if !found || len(pts) != 160 {
		t.Errorf("ring: %d points, first point found %v", len(pts), found)
	}
}

func TestRandom(t *testing.T) {
	t.Run("weighted", func(t *testing.T) {
		g := newTestGroup(t, BalancerConfig{Method: MethodRandom}, srv("a", "w=3"), srv("b"), srv("c", "down"))
		count := map[string]int{}
		for range 4000 {
			count[sessions(g, "", 1, t0)]++
		}
		if count["c"] != 0 || count["-"] != 0 {
			t.Errorf("down or failed picks: %v", count)
		}
		if r := float64(count["a"]) / float64(count["b"]); r < 2.6 || r > 3.4 {
			t.Errorf("a:b = %.2f, want about 3 (%v)", r, count)
		}
	})
	t.Run("seeded source is deterministic", func(t *testing.T) {
		mk := func() string {
			g := newTestGroup(t, BalancerConfig{Method: MethodRandom}, srv("a"), srv("b"), srv("c"), srv("d"))
			return sessions(g, "", 40, t0)
		}
		if a, b := mk(), mk(); a != b {
			t.Errorf("same seed, different sequences:\n%s\n%s", a, b)
		}
	})
	t.Run("retries skip tried", func(t *testing.T) {
		g := newTestGroup(t, BalancerConfig{Method: MethodRandom}, srv("a"), srv("b"), srv("c"))
		s := g.NewSelection("", 0, t0)
		seen := map[*Peer]bool{}
		for range 3 {
			p := must(s.Next(t0))
			if seen[p] {
				t.Errorf("%s twice", p.Host)
			}
			seen[p] = true
			s.Failed(p, t0)
		}
	})
	t.Run("two picks the less loaded", func(t *testing.T) {
		g := newTestGroup(t, BalancerConfig{Method: MethodRandom, Two: true, LeastConn: true}, srv("a"), srv("b"))
		busy := must(g.NewSelection("", 0, t0).Next(t0)) // held
		for range 50 {
			if p := must(g.NewSelection("", 0, t0).Next(t0)); p == busy {
				t.Fatalf("random two picked the busier peer %s", p.Host)
			} else {
				g.NewSelection("", 0, t0).Release(p)
			}
		}
	})
	t.Run("all banned falls back to round robin and fails", func(t *testing.T) {
		g := newTestGroup(t, BalancerConfig{Method: MethodRandom, Two: true}, srv("a", "down"), srv("b", "down"))
		if _, err := g.NewSelection("", 0, t0).Next(t0); !errors.Is(err, ErrNoLivePeers) {
			t.Errorf("got %v", err)
		}
	})
}

func TestConcurrentSessions(t *testing.T) {
	for _, bc := range []BalancerConfig{{}, {Method: MethodLeastConn}, {Method: MethodHash, Key: "k"},
		{Method: MethodHash, Key: "k", Consistent: true}, {Method: MethodRandom, Two: true}} {
		g, err := NewGroup(GroupConfig{Name: "u", Balancer: bc, Servers: []ServerConfig{
			srv("a", "w=3"), srv("b", "mc=4"), srv("c", "mf=2"), srv("d")}}, fakeResolve)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				for i := range 500 {
					now := t0.Add(time.Duration(i) * 100 * time.Millisecond)
					s := g.NewSelection("key"+strconv.Itoa(i%7), 0, now)
					p, err := s.Next(now)
					if err != nil {
						continue
					}
					if (i+w)%5 == 0 && s.TriesLeft() > 0 {
						s.Failed(p, now)
						if p, err = s.Next(now); err != nil {
							continue
						}
					}
					s.Connected(p, now)
					_ = p.Conns() + p.Fails()
					s.Release(p)
				}
			})
		}
		wg.Wait()
		for _, p := range g.Peers() {
			if p.Conns() != 0 {
				t.Errorf("%q: %s has %d conns after all sessions ended", bc.Method, p.Host, p.Conns())
			}
		}
	}
}

func TestCRC32Decimal(t *testing.T) {
	for _, n := range []int{0, 1, 9, 10, 21, 12345} {
		want := crc32.Update(0xdeadbeef, crc32.IEEETable, []byte(strconv.Itoa(n)))
		if got := crc32Decimal(0xdeadbeef, n); got != want {
			t.Errorf("crc32Decimal(%d) = %#x, want %#x", n, got, want)
		}
	}
}
