package pool

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// DNS re-resolution of `server NAME resolve` and `server NAME service=S
// resolve` (NGINX 1.27.3's ngx_stream_upstream_zone_module): a [Resolver]
// runs one goroutine per such server of a group, asks the configured name
// servers for the name's A (and AAAA) records, or for its SRV records and
// then their targets' addresses, and publishes the group's new peer set
// when the answer differs. It asks again when the answer's TTL (or the
// resolver's valid=) has passed.
//
// An address that stays keeps its *Peer, hence its connections, failures,
// weights and counters; an address that appears is a new Peer with fresh
// state; one that goes is no longer selected, and its sessions run on.
// A failed resolution (a timeout, SERVFAIL, REFUSED, an unreachable name
// server) keeps the addresses the server has and is tried again after
// resolver_timeout (1s at least); a name that does not exist (NXDOMAIN, or
// no record of the kinds asked for) leaves the server without addresses,
// as NGINX does, and is asked again after valid= or 10s.

// DefaultResolverTimeout is resolver_timeout's default.
const DefaultResolverTimeout = 30 * time.Second

// NGINX's resend interval to the next name server, and the wait after a
// NXDOMAIN answer without valid=.
const (
	resendInterval = 5 * time.Second
	negativeValid  = 10 * time.Second
)

// resolveStats counts a group's resolutions.
type resolveStats struct {
	ok, failed atomic.Uint64
}

// Resolutions returns how many resolutions of the group's `resolve`
// servers succeeded and failed so far (a name that does not exist counts
// as failed). Safe from any goroutine.
func (g *Group) Resolutions() (ok, failed uint64) {
	return g.resolves.ok.Load(), g.resolves.failed.Load()
}

// resolvedAddr is one address a resolution gave a server line.
type resolvedAddr struct {
	addr netip.AddrPort
	// host is what the TLS layer verifies: the server's host, or the
	// SRV record's target.
	host string
	// weight is the SRV record's weight (0: not from SRV).
	weight int
	// backup: an SRV record of a priority other than the lowest.
	backup bool
}

// SRVName returns the name NGINX queries for `server name service=service
// resolve`: "_service._tcp.name" when service has no dot, else
// "service.name" (service=_http._tcp, service=server1.backend).
func SRVName(service, name string) string {
	name = strings.TrimSuffix(name, ".")
	if !strings.Contains(service, ".") {
		return "_" + service + "._tcp." + name
	}
	return service + "." + name
}

// peersFor returns the peers of server slot i for addrs: old's peer when
// one has the same address, host and SRV weight (its state goes on), a new
// Peer otherwise. Addresses are sorted (backup last, then host, address,
// port) so that DNS servers that rotate their answers do not reorder the
// balancers. Runs with g.updMu held, or before g is published.
func (g *Group) peersFor(i int, addrs []resolvedAddr, old []*Peer) []*Peer {
	sl := &g.servers[i]
	addrs = slices.Clone(addrs)
	slices.SortFunc(addrs, func(a, b resolvedAddr) int {
		if a.backup != b.backup {
			if a.backup {
				return 1
			}
			return -1
		}
		return cmp.Or(strings.Compare(a.host, b.host), a.addr.Addr().Compare(b.addr.Addr()), cmp.Compare(a.addr.Port(), b.addr.Port()))
	})
	if sl.cfg.Service == "" {
		// An address twice in an answer is one server; two identical SRV
		// records are two (NGINX makes a peer of each record).
		addrs = slices.CompactFunc(addrs, func(a, b resolvedAddr) bool { return a.addr == b.addr && a.host == b.host })
	}
	var out []*Peer
	reused := map[*Peer]bool{}
	for _, a := range addrs {
		backup := sl.cfg.Backup || a.backup
		if backup && !g.allowsBackup() {
			continue // hash and random have no backup tier: NGINX drops them too
		}
		weight := sl.cfg.Weight
		if sl.cfg.Service != "" && weight == DefaultWeight {
			// NGINX: the SRV weight, unless the server line sets one.
			// Weight 0 is taken as 1: the balancers need positive
			// weights.
			weight = max(a.weight, 1)
		}
		var p *Peer
		for _, q := range old {
			if !reused[q] && q.Addr == a.addr && q.Host == a.host && q.srvWeight == a.weight && q.Backup == backup && q.cfgWeight == weight {
				p = q
				break
			}
		}
		if p == nil {
			p = sl.newPeer(a.addr, a.host, weight, a.weight, backup)
		}
		reused[p] = true
		out = append(out, p)
	}
	return out
}

// setResolved publishes addrs as server slot i's addresses, unless they
// are the ones it has, and records when to resolve it next. It returns
// the server's peers before and after. Safe from any goroutine.
func (g *Group) setResolved(i int, addrs []resolvedAddr, next time.Time) (before, after []*Peer) {
	g.updMu.Lock()
	defer g.updMu.Unlock()
	g.due[i] = next
	cur := g.set.Load()
	before = cur.byServer[i]
	after = g.peersFor(i, addrs, before)
	if slices.Equal(before, after) {
		return before, before
	}
	byServer := slices.Clone(cur.byServer)
	byServer[i] = after
	g.set.Store(g.newSet(byServer))
	close(cur.changed)
	return before, after
}

// setDue records when server slot i is to be resolved next.
func (g *Group) setDue(i int, next time.Time) {
	g.updMu.Lock()
	g.due[i] = next
	g.updMu.Unlock()
}

// dueAt returns when server slot i is to be resolved next (zero: now).
func (g *Group) dueAt(i int) time.Time {
	g.updMu.Lock()
	defer g.updMu.Unlock()
	return g.due[i]
}

// ResolverConfig is the `resolver` and `resolver_timeout` in force for a
// group.
type ResolverConfig struct {
	// Servers are the name servers, "ip:port"; they are asked in turn,
	// the next one when one does not answer within 5s.
	Servers []string
	// Valid, when positive, replaces the answers' TTL (valid=).
	Valid time.Duration
	// IPv4 and IPv6 say which address records are asked for (A, AAAA):
	// NGINX's ipv4= and ipv6=, both on by default.
	IPv4, IPv6 bool
	// Timeout bounds one resolution of a name (resolver_timeout); zero
	// means DefaultResolverTimeout.
	Timeout time.Duration
	// Logf receives one line per failed resolution (failed: true, in
	// NGINX's words, `NAME could not be resolved (110: Operation timed
	// out)`) and one per change of a server's addresses (failed: false).
	// It is called from the resolver's goroutines; nil: no log.
	Logf func(failed bool, format string, args ...any)
}

// Resolver re-resolves the `resolve` servers of one group. Several may run
// on one group (an old and a new configuration's, briefly, during a
// reload): each publication replaces one server's addresses whole.
type Resolver struct {
	g   *Group
	cfg ResolverConfig
	udp dns.Client
	tcp dns.Client
}

// NewResolver returns a resolver of g's `resolve` servers; Run starts it.
func NewResolver(g *Group, cfg ResolverConfig) *Resolver {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultResolverTimeout
	}
	if !cfg.IPv4 && !cfg.IPv6 {
		cfg.IPv4 = true
	}
	if cfg.Logf == nil {
		cfg.Logf = func(bool, string, ...any) {}
	}
	return &Resolver{g: g, cfg: cfg, udp: dns.Client{Net: "udp"}, tcp: dns.Client{Net: "tcp"}}
}

// Run resolves each `resolve` server of the group when it is due (at once
// for a new group; when the replaced configuration's resolver would have,
// for a group a reload carried over), then again at each answer's TTL,
// until ctx is done. Each server has its own goroutine, so a slow name
// delays no other. Runs on the caller's goroutine (start it with go) and
// returns once they all ended.
func (r *Resolver) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for i, sl := range r.g.servers {
		if !sl.dynamic {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.watch(ctx, i)
		}()
	}
	wg.Wait()
}

// watch is the resolution loop of server slot i, on its own goroutine.
func (r *Resolver) watch(ctx context.Context, i int) {
	t := time.NewTimer(time.Until(r.g.dueAt(i)))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		next := r.Resolve(ctx, i)
		if ctx.Err() != nil {
			return
		}
		t.Reset(time.Until(next))
	}
}

// Resolve resolves the group's server i (its index in the configuration)
// once, publishes the outcome and returns when the server is due again; a
// server without `resolve` is left alone (due in an hour). Runs on the
// server's goroutine (Run), or a test's.
func (r *Resolver) Resolve(ctx context.Context, i int) (next time.Time) {
	sl := &r.g.servers[i]
	if !sl.dynamic {
		return time.Now().Add(time.Hour)
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	var addrs []resolvedAddr
	var ttl time.Duration
	var err error
	if sl.cfg.Service != "" {
		addrs, ttl, err = r.lookupSRV(ctx, sl)
	} else {
		var ips []netip.Addr
		ips, ttl, err = r.lookupHost(ctx, sl.host)
		for _, a := range ips {
			addrs = append(addrs, resolvedAddr{addr: netip.AddrPortFrom(a, sl.port), host: sl.host})
		}
	}
	now := time.Now()
	if err != nil {
		if ctx.Err() != nil && errors.Is(ctx.Err(), context.Canceled) {
			return now // stopped
		}
		r.g.resolves.failed.Add(1)
		if sl.cfg.Service != "" {
			r.cfg.Logf(true, "service %s of %s could not be resolved (%v)", sl.cfg.Service, sl.host, err)
		} else {
			r.cfg.Logf(true, "%s could not be resolved (%v)", sl.host, err)
		}
	} else {
		r.g.resolves.ok.Add(1)
	}
	keep, kept := r.cfg.keepFor(ttl, err)
	if !kept {
		// Keep the addresses; try again after resolver_timeout.
		next = now.Add(max(r.cfg.Timeout, time.Second))
		r.g.setDue(i, next)
		return next
	}
	if err != nil {
		addrs = nil // NXDOMAIN: the name has no addresses now
	}
	next = now.Add(keep)
	before, after := r.g.setResolved(i, addrs, next)
	if !slices.Equal(before, after) {
		r.cfg.Logf(false, "upstream %q: server %s resolved to %s (was %s)", r.g.name, sl.cfg.Addr, peerList(after), peerList(before))
	}
	return next
}

// peerList is peers' addresses for a log line.
func peerList(peers []*Peer) string {
	if len(peers) == 0 {
		return "no addresses"
	}
	var b strings.Builder
	for i, p := range peers {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(p.String())
		if p.Backup {
			b.WriteString(" backup")
		}
	}
	return b.String()
}

// resolveError is a failed resolution with NGINX's code and text
// (ngx_resolver_strerror): a DNS rcode, or 110 for a timeout.
type resolveError struct {
	code int
	text string
}

func (e *resolveError) Error() string { return fmt.Sprintf("%d: %s", e.code, e.text) }

// errTimedOut is NGX_RESOLVE_TIMEDOUT.
var errTimedOut = &resolveError{code: 110, text: "Operation timed out"}

// rcodeError is the error of a DNS answer with rcode, as NGINX words it.
func rcodeError(rcode int) *resolveError {
	texts := [...]string{"Format error", "Server failure", "Host not found", "Unimplemented", "Operation refused"}
	if rcode > 0 && rcode <= len(texts) {
		return &resolveError{code: rcode, text: texts[rcode-1]}
	}
	return &resolveError{code: rcode, text: "Unknown error"}
}

// errNoData is an answer without a record of the kind asked for: NGINX
// takes it as NXDOMAIN.
var errNoData = rcodeError(dns.RcodeNameError)

// exchange asks the name servers in turn for name's records of type
// qtype, each for at most 5s (NGINX's resend interval), until one answers
// or ctx ends (then: 110, Operation timed out); a truncated UDP answer is
// asked again over TCP. An answer with an error rcode is final.
func (r *Resolver) exchange(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	for k := 0; ; k++ {
		if err := ctx.Err(); err != nil {
			return nil, errTimedOut
		}
		server := r.cfg.Servers[k%len(r.cfg.Servers)]
		actx, cancel := context.WithTimeout(ctx, resendInterval)
		resp, _, err := r.udp.ExchangeContext(actx, m, server)
		if err == nil && resp.Truncated {
			resp, _, err = r.tcp.ExchangeContext(actx, m, server)
		}
		if err == nil {
			cancel()
			if resp.Rcode != dns.RcodeSuccess {
				return nil, rcodeError(resp.Rcode)
			}
			return resp, nil
		}
		var ne net.Error
		if !(errors.As(err, &ne) && ne.Timeout()) && ctx.Err() == nil {
			// Refused at once (nothing listens there): logged as
			// NGINX logs the failed recv(); the next server is asked
			// at once, and after a round of such failures the next
			// round waits for the resend interval rather than spin.
			r.cfg.Logf(true, "%v while resolving, resolver: %s", err, server)
			if (k+1)%len(r.cfg.Servers) == 0 {
				<-actx.Done()
			}
		}
		cancel()
	}
}

// lookupHost returns the addresses of name (A, and AAAA with ipv6=on,
// IPv4 first) and the least TTL of their records. It fails with
// NXDOMAIN only when no query found an address and none failed otherwise.
func (r *Resolver) lookupHost(ctx context.Context, name string) ([]netip.Addr, time.Duration, error) {
	if a, err := netip.ParseAddr(name); err == nil {
		return []netip.Addr{a.Unmap()}, 0, nil
	}
	var qtypes []uint16
	if r.cfg.IPv4 {
		qtypes = append(qtypes, dns.TypeA)
	}
	if r.cfg.IPv6 {
		qtypes = append(qtypes, dns.TypeAAAA)
	}
	var addrs []netip.Addr
	ttl := time.Duration(-1)
	var failed error
	for _, qt := range qtypes {
		// An answer that holds only a CNAME is followed with a query for
		// its target, as NGINX's resolver does, at most maxCNAMEs times.
		qname := name
	follow:
		for range maxCNAMEs {
			resp, err := r.exchange(ctx, qname, qt)
			if err != nil {
				if !isNXDomain(err) {
					failed = err
				}
				break
			}
			found, cname := false, ""
			for _, rr := range resp.Answer {
				var ip net.IP
				switch rr := rr.(type) {
				case *dns.A:
					if qt == dns.TypeA {
						ip = rr.A
					}
				case *dns.AAAA:
					if qt == dns.TypeAAAA {
						ip = rr.AAAA
					}
				case *dns.CNAME:
					cname = rr.Target
				}
				if d := time.Duration(rr.Header().Ttl) * time.Second; ttl < 0 || d < ttl {
					ttl = d // a CNAME's TTL bounds the answer too
				}
				a, ok := netip.AddrFromSlice(ip)
				if !ok {
					continue
				}
				addrs = append(addrs, a.Unmap())
				found = true
			}
			if found || cname == "" {
				break follow
			}
			qname = cname
		}
	}
	if len(addrs) == 0 {
		if failed != nil {
			return nil, 0, failed
		}
		return nil, 0, errNoData
	}
	return addrs, max(ttl, 0), nil
}

// maxCNAMEs bounds the CNAMEs lookupHost follows for one name.
const maxCNAMEs = 8

// lookupSRV resolves sl's SRV records and their targets: the addresses
// with the records' ports and weights, the records of the lowest priority
// number primary and the others backup; the least TTL of all records. A
// target that cannot be resolved is logged and left out.
func (r *Resolver) lookupSRV(ctx context.Context, sl *serverSlot) ([]resolvedAddr, time.Duration, error) {
	resp, err := r.exchange(ctx, SRVName(sl.cfg.Service, sl.host), dns.TypeSRV)
	if err != nil {
		return nil, 0, err
	}
	var srvs []*dns.SRV
	ttl := time.Duration(-1)
	minPrio := -1
	for _, rr := range resp.Answer {
		s, ok := rr.(*dns.SRV)
		if !ok || s.Target == "." || s.Port == 0 {
			continue // "." : the service is not offered there (RFC 2782)
		}
		srvs = append(srvs, s)
		if d := time.Duration(s.Hdr.Ttl) * time.Second; ttl < 0 || d < ttl {
			ttl = d
		}
		if minPrio < 0 || int(s.Priority) < minPrio {
			minPrio = int(s.Priority)
		}
	}
	if len(srvs) == 0 {
		return nil, 0, errNoData
	}
	type answer struct {
		ips []netip.Addr
		ttl time.Duration
		err error
	}
	targets := map[string]answer{}
	var out []resolvedAddr
	var firstErr error
	nx := false
	for _, s := range srvs {
		target := strings.TrimSuffix(s.Target, ".")
		ans, ok := targets[target]
		if !ok {
			ans.ips, ans.ttl, ans.err = r.lookupHost(ctx, target)
			targets[target] = ans
			if ans.err != nil {
				r.cfg.Logf(true, "%s could not be resolved (%v) while resolving service %s of %s", target, ans.err, sl.cfg.Service, sl.host)
				if isNXDomain(ans.err) {
					nx = true
				} else if firstErr == nil {
					firstErr = ans.err
				}
			} else if ans.ttl < ttl {
				ttl = ans.ttl
			}
		}
		for _, a := range ans.ips {
			out = append(out, resolvedAddr{addr: netip.AddrPortFrom(a, s.Port), host: target, weight: int(s.Weight), backup: int(s.Priority) != minPrio})
		}
	}
	if len(out) == 0 {
		if nx || firstErr == nil {
			return nil, 0, errNoData
		}
		return nil, 0, firstErr
	}
	return out, max(ttl, 0), nil
}
