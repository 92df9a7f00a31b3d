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
	// (IPv6 in brackets).
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
	// [Group.NewSelection]. Only for MethodHash.
	Key string
	// Consistent selects ketama consistent hashing. Only for MethodHash.
	Consistent bool
	// Two selects `random two`: the less loaded of two random servers.
	Two bool
	// LeastConn records `random two least_conn`; it is the only way `two`
	// compares servers, so it changes nothing.
	LeastConn bool
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
// by [NewGroup] and must not be changed; its counters may be read from any
// goroutine. Its metrics (handshakes, connect and handshake times, state)
// are in stats.go.
type Peer struct {
	// Addr is the address connected to.
	Addr netip.AddrPort
	// Host is the host part of the server's address as written, e.g.
	// "backend1.example.com" or "127.0.0.1": the name the TLS layer
	// verifies the certificate against.
	Host string
	// Name is the server's address as written, "host:port".
	Name string
	// Weight is the server's weight.
	Weight int
	// MaxFails, MaxConns and FailTimeout are the server's parameters.
	MaxFails    int
	MaxConns    int
	FailTimeout time.Duration
	// Backup reports a backup server.
	Backup bool
	// Down reports a server marked down in the configuration.
	Down bool

	index  int // position in its tier
	server int // index of the distinct server Name (consistent hashing)

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
func (p *Peer) String() string { return p.Addr.String() }

// tier is NGINX's ngx_stream_upstream_rr_peers_t: the primary or the backup
// servers of a group.
type tier struct {
	peers       []*Peer
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
)

// Group is an upstream group. It is safe for concurrent use; see the package
// documentation.
type Group struct {
	// Constant after NewGroup.
	name      string
	method    method
	primary   tier
	backup    tier
	peers     []*Peer // primaries, then backups
	points    []chashPoint
	maxTier   int   // peers in the larger tier: the tried bitmap's size
	errNoLive error // ErrNoLivePeers wrapped with the name, made once
	balancer  BalancerConfig

	mu   sync.Mutex // guards the peers' balancer and health state, and rand
	rand rand.Source
}

// NewGroup builds a group from gc, resolving server names with resolve
// (nil: net.DefaultResolver) as NGINX does at load time. It runs on any
// goroutine, once per configuration load.
func NewGroup(gc GroupConfig, resolve func(ctx context.Context, host string) ([]netip.Addr, error)) (*Group, error) {
	if resolve == nil {
		resolve = defaultResolve
	}
	g := &Group{name: gc.Name, rand: gc.Rand, balancer: gc.Balancer}
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
	default:
		return nil, fmt.Errorf("building upstream %q: unknown balancing method %q", gc.Name, b.Method)
	}

	serverIDs := make(map[string]int)
	ctx := context.Background()
	for i, sc := range gc.Servers {
		if gc.Implicit {
			sc = ServerConfig{Addr: sc.Addr, Weight: DefaultWeight, MaxFails: DefaultMaxFails, FailTimeout: DefaultFailTimeout}
		}
		if err := checkServer(sc); err != nil {
			return nil, fmt.Errorf("building upstream %q: server %d %q: %w", gc.Name, i+1, sc.Addr, err)
		}
		if sc.Backup && g.method != methodRR && g.method != methodLeastConn {
			return nil, fmt.Errorf("building upstream %q: server %q: backup servers are not allowed with %q balancing", gc.Name, sc.Addr, b.Method)
		}
		host, portStr, err := net.SplitHostPort(sc.Addr)
		if err != nil {
			return nil, fmt.Errorf("building upstream %q: %w", gc.Name, err)
		}
		port, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil || port == 0 {
			return nil, fmt.Errorf("building upstream %q: invalid port in %q", gc.Name, sc.Addr)
		}
		addrs, err := resolveHost(ctx, resolve, host)
		if err != nil {
			return nil, fmt.Errorf("host not found in upstream %q: %w", sc.Addr, err)
		}
		id, ok := serverIDs[sc.Addr]
		if !ok {
			id = len(serverIDs)
			serverIDs[sc.Addr] = id
		}
		weight := sc.Weight
		if weight == 0 {
			weight = DefaultWeight
		}
		for _, a := range addrs {
			p := &Peer{
				Addr:            netip.AddrPortFrom(a, uint16(port)),
				Host:            host,
				Name:            sc.Addr,
				Weight:          weight,
				MaxFails:        sc.MaxFails,
				MaxConns:        sc.MaxConns,
				FailTimeout:     sc.FailTimeout,
				Backup:          sc.Backup,
				Down:            sc.Down,
				server:          id,
				effectiveWeight: weight,
				stats:           new(peerStats),
			}
			t := &g.primary
			if sc.Backup {
				t = &g.backup
			}
			p.index = len(t.peers)
			t.peers = append(t.peers, p)
		}
	}
	if len(g.primary.peers) == 0 {
		return nil, fmt.Errorf("no servers in upstream %q", gc.Name)
	}
	for _, t := range []*tier{&g.primary, &g.backup} {
		for _, p := range t.peers {
			t.ranges = append(t.ranges, t.totalWeight)
			t.totalWeight += p.Weight
			if !p.Down {
				t.tries++
			}
		}
		g.maxTier = max(g.maxTier, len(t.peers))
	}
	g.primary.single = len(g.primary.peers) == 1 && len(g.backup.peers) == 0
	g.peers = append(slices.Clip(g.primary.peers), g.backup.peers...)
	if g.method == methodCHash {
		g.points = buildRing(g.primary.peers)
	}
	return g, nil
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

func defaultResolve(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
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
	out := make([]netip.Addr, 0, len(addrs))
	for _, v4 := range []bool{true, false} {
		for _, a := range addrs {
			a = a.Unmap()
			if a.Is4() == v4 && !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
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
	n := 0
	for _, p := range peers {
		n += p.Weight * 160
	}
	points := make([]chashPoint, 0, n)
	for _, p := range peers {
		host, port := splitServerName(p.Name)
		base := crc32.ChecksumIEEE([]byte(host))
		base = crc32.Update(base, crc32.IEEETable, []byte{0})
		base = crc32.Update(base, crc32.IEEETable, []byte(port))
		var prev [4]byte
		for range p.Weight * 160 {
			h := crc32.Update(base, crc32.IEEETable, prev[:])
			points = append(points, chashPoint{hash: h, server: p.server})
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

// Peers returns the group's peers, primaries first, then backups. The slice
// must not be modified. Safe from any goroutine.
func (g *Group) Peers() []*Peer { return g.peers }

// Tries returns the natural number of tries of a session: the servers not
// marked down, primaries and backups.
func (g *Group) Tries() int { return g.primary.tries + g.backup.tries }
