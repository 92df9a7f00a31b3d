package pool

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// NGINX's defaults for a server's parameters, and the fixed parameters of an
// implicit group (`proxy_pass host:port`).
const (
	DefaultWeight      = 1
	DefaultMaxFails    = 1
	DefaultFailTimeout = 10 * time.Second
)

// Balancing methods, the values of [BalancerConfig.Method].
const (
	MethodRoundRobin = ""
	MethodLeastConn  = "least_conn"
	MethodHash       = "hash"
	MethodRandom     = "random"
)

// ErrNoLivePeers is returned by [Selection.Next] when no server of the group
// can be used. The error returned wraps it with the group's name, in NGINX's
// words: `no live upstreams while connecting to upstream "backend"` (hence no
// "pool: " prefix: the text is the one NGINX users search their logs for).
var ErrNoLivePeers = errors.New("no live upstreams")

// ErrNoTriesLeft is returned by [Selection.Next] when the session has used
// all its tries (proxy_next_upstream_tries, or the number of servers).
var ErrNoTriesLeft = errors.New("pool: no upstream tries left")

// ServerConfig is one `server` line of an upstream block, with the values as
// configured. The configuration layer fills in NGINX's defaults (weight=1
// max_fails=1 fail_timeout=10s); [NewServerConfig] does the same.
type ServerConfig struct {
	// Addr is "host:port" as written; host is a name or an IP literal
	// (IPv6 in brackets). "unix:/path" is a unix domain socket.
	Addr string
	// Weight is the relative weight. Zero means 1.
	Weight int
	// MaxFails is the number of failures within FailTimeout that bans the
	// server for FailTimeout. Zero disables the accounting.
	MaxFails int
	// MaxConns caps the active connections to each of the server's
	// addresses. Zero means no limit.
	MaxConns int
	// FailTimeout is both the window for MaxFails and the ban time.
	FailTimeout time.Duration
	// Backup marks a server used only when no primary server can be.
	Backup bool
	// Down marks a server never used.
	Down bool
	// Resolve re-resolves the server's host name at run time (`server
	// NAME resolve`): the server's addresses follow the DNS answers a
	// [Resolver] publishes. A server with Resolve has no addresses until
	// its first answer. An IP literal host is not resolved.
	Resolve bool
	// Service is `service=NAME`: the server's addresses are those of the
	// SRV records of the name [SRVName] forms, with their ports. Addr is
	// then the host alone, without a port. Needs Resolve.
	Service string
}

// NewServerConfig returns a ServerConfig for addr with NGINX's defaults.
func NewServerConfig(addr string) ServerConfig {
	return ServerConfig{Addr: addr, Weight: DefaultWeight, MaxFails: DefaultMaxFails, FailTimeout: DefaultFailTimeout}
}

// BalancerConfig is the balancing directive of an upstream block.
type BalancerConfig struct {
	// Method is one of MethodRoundRobin (""), MethodLeastConn, MethodHash
	// and MethodRandom.
	Method string
	// Key is the hash key template as written (it may hold variables); the
	// caller evaluates it per session and passes the result to
	// [Group.InitSelection] (or [Group.NewSelection]). Only for MethodHash.
	Key string
	// Consistent selects ketama consistent hashing. Only for MethodHash.
	Consistent bool
	// Two selects `random two`: the less loaded of two random servers.
	Two bool
	// LeastConn records `random two least_conn`; it is the only way `two`
	// compares servers, so it changes nothing.
	LeastConn bool
	// LeastTime is least_time's measure (LeastTimeConnect, ...), and
	// Inflight its inflight parameter (which changes nothing: the active
	// connections always count, see leastTimeCost). Only for
	// MethodLeastTime.
	LeastTime string
	Inflight  bool
}

// GroupConfig describes an upstream group.
type GroupConfig struct {
	// Name is the upstream block's name, or "host:port" for an implicit
	// group. Errors and logs use it.
	Name string
	// Servers are the group's servers in configuration order.
	Servers []ServerConfig
	// Balancer is the balancing method.
	Balancer BalancerConfig
	// Implicit marks the group `proxy_pass host:port` creates: every server
	// gets weight 1, max_fails 1, fail_timeout 10s, whatever Servers says.
	Implicit bool
	// Rand is the random source of the random balancer. Nil: the runtime's
	// generator. It is called with the group's lock held, so it need not be
	// safe for concurrent use.
	Rand rand.Source
}

// Peer is one address of one server of a group. Its exported fields are set
// when it is made ([NewGroup], or a [Resolver] for a new address of a
// `resolve` server) and must not be changed; its counters may be read from
// any goroutine. Its metrics (handshakes, connect and handshake times, state)
// are in stats.go.
type Peer struct {
	// Addr is the address connected to; invalid for a unix domain
	// socket server, whose Path is set instead.
	Addr netip.AddrPort
	// Path is the socket of a "unix:/path" server; "" for TCP.
	Path string
	// Host is the host part of the server's address as written, e.g.
	// "backend1.example.com" or "127.0.0.1": the name the TLS layer
	// verifies the certificate against. For `service=` it is the SRV
	// record's target.
	Host string
	// Name is the server's address as written, "host:port" (for
	// `service=`: the SRV record's "target:port").
	Name string
	// Weight is the server's weight. The runtime API may change it
	// (Group.SetWeight, under the group's lock); cfgWeight keeps the
	// configuration's.
	Weight    int
	cfgWeight int
	// MaxFails, MaxConns and FailTimeout are the server's parameters.
	MaxFails    int
	MaxConns    int
	FailTimeout time.Duration
	// Backup reports a backup server.
	Backup bool
	// Down reports a server marked down in the configuration.
	Down bool

	// text is Addr as text, made once (String).
	text string
	// srvWeight is the SRV record's weight the peer came from (0: not
	// from an SRV record), so that a new answer with another weight makes
	// a new peer, as NGINX does.
	srvWeight int

	// admin is what the runtime API changed (admin.go).
	admin adminState
	// times are the moving averages least_time compares (leasttime.go);
	// timedBy is the measure the peer's group compares (noMeasure: not
	// least_time), the only one kept.
	times   peerTimes
	timedBy measure

	// Protected by the group's mu.
	currentWeight   int
	effectiveWeight int
	fails           int
	conns           int
	checked         time.Time // start of the current fail_timeout window
	accessed        time.Time // time of the last failure

	// Mirrors for readers outside the lock.
	nConns atomic.Int64
	nFails atomic.Int64

	// stats are the peer's cumulative counters (stats.go); a reload that
	// keeps the peer hands the same stats to its successor (Inherit), so
	// they are never reset.
	stats *peerStats
}

// Conns returns the peer's active connections (selected and not yet failed
// or released). Safe from any goroutine.
func (p *Peer) Conns() int { return int(p.nConns.Load()) }

// Fails returns the failures counted toward max_fails in the current
// window. Safe from any goroutine.
func (p *Peer) Fails() int { return int(p.nFails.Load()) }

// Selected returns how many times the peer was selected. Safe from any
// goroutine.
func (p *Peer) Selected() uint64 { return p.stats.selected.Load() }

// Failures returns how many attempts on the peer failed. Safe from any
// goroutine.
func (p *Peer) Failures() uint64 { return p.stats.failures.Load() }

// String returns the peer's address, as NGINX's $upstream_addr shows it.
// It does not allocate.
func (p *Peer) String() string {
	if p.text == "" {
		return p.Addr.String()
	}
	return p.text
}

// tier is NGINX's ngx_stream_upstream_rr_peers_t: the primary or the backup
// servers of a group.
type tier struct {
	peers       []*Peer
	server      []int // consistent hashing: the distinct server Name of each peer
	totalWeight int
	tries       int   // peers not down
	single      bool  // exactly one peer and no backup tier
	ranges      []int // random: ranges[i] = sum of weights before peer i
}

// chashPoint is a point of the consistent hashing ring.
type chashPoint struct {
	hash   uint32
	server int
}

// method is the balancing method, resolved once.
type method uint8

const (
	methodRR method = iota
	methodLeastConn
	methodHash
	methodCHash
	methodRandom
	methodRandom2
	methodLeastTime
)

// peerSet is one version of a group's peers. It is immutable once
// published: a change of a `resolve` server's addresses publishes a new set
// (copy on write), and a Selection keeps walking the set it started on.
type peerSet struct {
	primary tier
	backup  tier
	peers   []*Peer // primaries, then backups
	points  []chashPoint
	maxTier int // peers in the larger tier: the tried bitmap's size
	// byServer are the peers of each server line, index for index with
	// Group.servers.
	byServer [][]*Peer
	// changed is closed when a newer set replaces this one.
	changed chan struct{}
}

// serverSlot is one server line of a group, as configured.
type serverSlot struct {
	cfg  ServerConfig // Implicit defaults applied
	host string
	port uint16 // 0 for service=
	// dynamic: resolve with a host name, whose addresses a Resolver
	// publishes.
	dynamic bool
	// timedBy is the measure its peers keep (Peer.timedBy).
	timedBy measure
}

// Group is an upstream group. It is safe for concurrent use; see the package
// documentation.
type Group struct {
	// Constant after NewGroup.
	name   string
	method method
	// timedBy is the measure least_time compares (noMeasure: another
	// method); each peer keeps that one (Peer.timedBy).
	timedBy   measure
	servers   []serverSlot
	dynamic   bool  // some server has resolve
	errNoLive error // ErrNoLivePeers wrapped with the name, made once
	balancer  BalancerConfig

	// set is the current peer set; updMu serializes its replacement and
	// guards due.
	set   atomic.Pointer[peerSet]
	updMu sync.Mutex
	due   []time.Time // per server: when its name is to be resolved next
	// resolves counts the resolutions of the group's names; a reload
	// that rebuilds the group hands it on (Inherit).
	resolves *resolveStats

	mu   sync.Mutex // guards the peers' balancer and health state, and rand
	rand rand.Source
}

// NewGroup builds a group from gc, resolving server names with resolve
// (nil: net.DefaultResolver) as NGINX does at load time. It runs on any
// goroutine, once per configuration load.
func NewGroup(gc GroupConfig, resolve func(ctx context.Context, host string) ([]netip.Addr, error)) (*Group, error) {
	if resolve == nil {
		resolve = SystemResolve
	}
	g := &Group{name: gc.Name, rand: gc.Rand, balancer: gc.Balancer, timedBy: noMeasure}
	g.errNoLive = fmt.Errorf("%w while connecting to upstream %q", ErrNoLivePeers, gc.Name)

	b := gc.Balancer
	switch b.Method {
	case MethodRoundRobin:
		g.method = methodRR
	case MethodLeastConn:
		g.method = methodLeastConn
	case MethodHash:
		g.method = methodHash
		if b.Consistent {
			g.method = methodCHash
		}
	case MethodRandom:
		g.method = methodRandom
		if b.Two {
			g.method = methodRandom2
		}
	case MethodLeastTime:
		m, ok := measureOf(b.LeastTime)
		if !ok {
			return nil, fmt.Errorf("building upstream %q: least_time %q: want connect, first_byte or last_byte", gc.Name, b.LeastTime)
		}
		g.method, g.timedBy = methodLeastTime, m
	default:
		return nil, fmt.Errorf("building upstream %q: unknown balancing method %q", gc.Name, b.Method)
	}

	ctx := context.Background()
	var byServer [][]*Peer
	for i, sc := range gc.Servers {
		if gc.Implicit {
			sc = ServerConfig{Addr: sc.Addr, Weight: DefaultWeight, MaxFails: DefaultMaxFails, FailTimeout: DefaultFailTimeout}
		}
		if err := checkServer(sc); err != nil {
			return nil, fmt.Errorf("building upstream %q: server %d %q: %w", gc.Name, i+1, sc.Addr, err)
		}
		if sc.Backup && !g.allowsBackup() {
			return nil, fmt.Errorf("building upstream %q: server %q: backup servers are not allowed with %q balancing", gc.Name, sc.Addr, b.Method)
		}
		if sc.Weight == 0 {
			sc.Weight = DefaultWeight
		}
		slot := serverSlot{cfg: sc, timedBy: g.timedBy}
		if path, ok := strings.CutPrefix(sc.Addr, "unix:"); ok {
			g.servers = append(g.servers, slot)
			byServer = append(byServer, []*Peer{slot.unixPeer(path)})
			continue
		}
		if sc.Service != "" {
			if !sc.Resolve {
				return nil, fmt.Errorf("building upstream %q: service upstream %q requires \"resolve\" parameter", gc.Name, sc.Addr)
			}
			slot.host, slot.dynamic = sc.Addr, true
		} else {
			host, portStr, err := net.SplitHostPort(sc.Addr)
			if err != nil {
				return nil, fmt.Errorf("building upstream %q: %w", gc.Name, err)
			}
			port, err := strconv.ParseUint(portStr, 10, 16)
			if err != nil || port == 0 {
				return nil, fmt.Errorf("building upstream %q: invalid port in %q", gc.Name, sc.Addr)
			}
			slot.host, slot.port = host, uint16(port)
			if _, err := netip.ParseAddr(host); err != nil && sc.Resolve {
				slot.dynamic = true
			}
		}
		var peers []*Peer
		if !slot.dynamic {
			addrs, err := resolveHost(ctx, resolve, slot.host)
			if err != nil {
				return nil, fmt.Errorf("host not found in upstream %q: %w", sc.Addr, err)
			}
			for _, a := range addrs {
				peers = append(peers, slot.newPeer(netip.AddrPortFrom(a, slot.port), slot.host, sc.Weight, 0, sc.Backup))
			}
		}
		g.dynamic = g.dynamic || slot.dynamic
		g.servers = append(g.servers, slot)
		byServer = append(byServer, peers)
	}
	set := g.newSet(byServer)
	if len(set.primary.peers) == 0 && !g.dynamic {
		return nil, fmt.Errorf("no servers in upstream %q", gc.Name)
	}
	g.set.Store(set)
	g.due = make([]time.Time, len(g.servers))
	g.resolves = new(resolveStats)
	return g, nil
}

// allowsBackup reports whether the balancing method has a backup tier.
func (g *Group) allowsBackup() bool {
	return g.method == methodRR || g.method == methodLeastConn || g.method == methodLeastTime
}

// newPeer makes a peer of the server line at addr; host is what the TLS
// layer verifies (the server's host, or an SRV record's target); srvWeight
// is the SRV record's weight (0: none).
func (sl *serverSlot) newPeer(addr netip.AddrPort, host string, weight, srvWeight int, backup bool) *Peer {
	sc := sl.cfg
	name := sc.Addr
	if sl.cfg.Service != "" {
		name = net.JoinHostPort(host, strconv.Itoa(int(addr.Port())))
	}
	return &Peer{
		Addr:            addr,
		Host:            host,
		Name:            name,
		Weight:          weight,
		MaxFails:        sc.MaxFails,
		MaxConns:        sc.MaxConns,
		FailTimeout:     sc.FailTimeout,
		Backup:          backup,
		Down:            sc.Down,
		text:            addr.String(),
		srvWeight:       srvWeight,
		cfgWeight:       weight,
		effectiveWeight: weight,
		stats:           new(peerStats),
		timedBy:         sl.timedBy,
	}
}

// newSet builds the peer set of the servers' peers: the tiers in
// configuration order, their weights, the consistent hashing ring.
func (g *Group) newSet(byServer [][]*Peer) *peerSet {
	s := &peerSet{byServer: byServer, changed: make(chan struct{})}
	for _, ps := range byServer {
		for _, p := range ps {
			t := &s.primary
			if p.Backup {
				t = &s.backup
			}
			t.peers = append(t.peers, p)
		}
	}
	for _, t := range []*tier{&s.primary, &s.backup} {
		for _, p := range t.peers {
			t.ranges = append(t.ranges, t.totalWeight)
			// cfgWeight: hash and random, which read these, refuse
			// SetWeight; it is the weight no other goroutine writes.
			t.totalWeight += p.cfgWeight
			if !p.Down {
				t.tries++
			}
		}
		t.server = serverIDs(t.peers)
		s.maxTier = max(s.maxTier, len(t.peers))
	}
	s.primary.single = len(s.primary.peers) == 1 && len(s.backup.peers) == 0
	s.peers = append(slices.Clip(s.primary.peers), s.backup.peers...)
	if g.method == methodCHash {
		s.points = buildRing(s.primary.peers)
	}
	return s
}

// serverIDs numbers the distinct server names of peers in order of first
// appearance: the servers of consistent hashing.
func serverIDs(peers []*Peer) []int {
	ids := make([]int, len(peers))
	seen := make(map[string]int, len(peers))
	for i, p := range peers {
		id, ok := seen[p.Name]
		if !ok {
			id = len(seen)
			seen[p.Name] = id
		}
		ids[i] = id
	}
	return ids
}

// checkServer refuses the values NGINX's parser refuses.
func checkServer(sc ServerConfig) error {
	switch {
	case sc.Weight < 0:
		return errors.New("invalid weight")
	case sc.MaxFails < 0:
		return errors.New("invalid max_fails")
	case sc.MaxConns < 0:
		return errors.New("invalid max_conns")
	case sc.FailTimeout < 0:
		return errors.New("invalid fail_timeout")
	}
	return nil
}

// SystemResolve resolves host with the system's resolver (Go's, reading
// /etc/resolv.conf and /etc/hosts): what NewGroup uses when given no
// resolver. Safe from any goroutine.
func SystemResolve(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// ipv4First returns addrs unmapped, IPv4 first (as ngx_inet_resolve_host
// and NGINX's resolver order them), without duplicates, in their order
// otherwise.
func ipv4First(addrs []netip.Addr) []netip.Addr {
	out := make([]netip.Addr, 0, len(addrs))
	for _, v4 := range []bool{true, false} {
		for _, a := range addrs {
			a = a.Unmap()
			if a.Is4() == v4 && !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	return out
}

// resolveHost returns the addresses of host: the literal itself, or what
// resolve returns, IPv4 first (as ngx_inet_resolve_host orders them), without
// duplicates.
func resolveHost(ctx context.Context, resolve func(context.Context, string) ([]netip.Addr, error), host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	addrs, err := resolve(ctx, host)
	if err != nil {
		return nil, err
	}
	out := ipv4First(addrs)
	if len(out) == 0 {
		return nil, errors.New("no addresses")
	}
	return out, nil
}

// buildRing builds the ketama ring of ngx_stream_upstream_init_chash:
// weight×160 points per peer, each crc32(HOST \0 PORT PREV_HASH) with the
// previous point's hash as four little-endian bytes, sorted, duplicates
// removed (the first of equal points stays).
func buildRing(peers []*Peer) []chashPoint {
	ids := serverIDs(peers)
	n := 0
	for _, p := range peers {
		n += p.Weight * 160
	}
	points := make([]chashPoint, 0, n)
	for i, p := range peers {
		host, port := splitServerName(p.Name)
		base := crc32.ChecksumIEEE([]byte(host))
		base = crc32.Update(base, crc32.IEEETable, []byte{0})
		base = crc32.Update(base, crc32.IEEETable, []byte(port))
		var prev [4]byte
		for range p.Weight * 160 {
			h := crc32.Update(base, crc32.IEEETable, prev[:])
			points = append(points, chashPoint{hash: h, server: ids[i]})
			prev = [4]byte{byte(h), byte(h >> 8), byte(h >> 16), byte(h >> 24)}
		}
	}
	slices.SortStableFunc(points, func(a, b chashPoint) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return 0
	})
	return slices.CompactFunc(points, func(a, b chashPoint) bool { return a.hash == b.hash })
}

// splitServerName splits a server name as ngx_stream_upstream_init_chash
// does: "unix:" names are all host; otherwise the port is the run of digits
// after the last colon, if any.
func splitServerName(name string) (host, port string) {
	if len(name) >= 5 && strings.EqualFold(name[:5], "unix:") {
		return name[5:], ""
	}
	for j := len(name) - 1; j >= 0; j-- {
		c := name[j]
		if c == ':' {
			return name[:j], name[j+1:]
		}
		if c < '0' || c > '9' {
			break
		}
	}
	return name, ""
}

// Name returns the group's name.
func (g *Group) Name() string { return g.name }

// Peers returns the group's current peers, primaries first, then backups.
// The slice must not be modified; a resolution that changes the peers
// publishes a new slice and leaves this one as it is. Safe from any
// goroutine.
func (g *Group) Peers() []*Peer { return g.set.Load().peers }

// Tries returns the natural number of tries of a session: the servers not
// marked down, primaries and backups, of the current peers.
func (g *Group) Tries() int { return g.set.Load().tries() }

// tries is the number of tries a session has over the set: NGINX's
// tries of the primary and the backup tier.
func (s *peerSet) tries() int { return s.primary.tries + s.backup.tries }

// Resolves reports whether some server of the group has `resolve` (with a
// host name), so that a [Resolver] should run for it.
func (g *Group) Resolves() bool { return g.dynamic }
