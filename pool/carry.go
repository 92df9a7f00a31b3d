package pool

import (
	"net/netip"
	"slices"
)

// Carrying a group's state across a configuration reload.
//
// A reload builds new groups. A group whose servers, addresses, parameters
// and balancer are all unchanged is not rebuilt at all: the new
// configuration keeps the old *Group (SameAs), so active connections,
// max_fails state, smooth round-robin weights and every counter go on as if
// nothing happened. A group that changed starts its balancer afresh, as
// NGINX's new workers do, but each peer that stayed (same server name,
// address and parameters) inherits its health (failures in the current
// fail_timeout window, a ban) and its counters (Inherit), so a banned
// server stays banned and metrics are never reset.

// SameAs reports whether g and o describe the same group: name, balancer,
// the same server lines, and for the servers without `resolve` the same
// peers (address, parameters) in the same order. The addresses of
// `resolve` servers are not compared: they are DNS's, and a group kept
// whole keeps them. Safe from any goroutine.
func (g *Group) SameAs(o *Group) bool {
	if g.name != o.name || g.method != o.method || g.balancer != o.balancer || len(g.servers) != len(o.servers) {
		return false
	}
	gs, os := g.set.Load(), o.set.Load()
	for i, sl := range g.servers {
		if sl != o.servers[i] {
			return false
		}
		if sl.dynamic {
			continue
		}
		a, b := gs.byServer[i], os.byServer[i]
		if len(a) != len(b) {
			return false
		}
		for j, p := range a {
			if !samePeer(p, b[j]) {
				return false
			}
		}
	}
	return true
}

// samePeer reports whether p and q are one server address with the same
// parameters, as configured (a weight the runtime API changed does not
// count: the change is dropped by the reload, the peer's state is not).
func samePeer(p, q *Peer) bool {
	return p.Addr == q.Addr && p.Name == q.Name && p.cfgWeight == q.cfgWeight && p.MaxFails == q.MaxFails &&
		p.MaxConns == q.MaxConns && p.FailTimeout == q.FailTimeout && p.Backup == q.Backup && p.Down == q.Down
}

// Inherit carries prev's state into g, a group built for a new
// configuration. A `resolve` server of g that prev also has (same host
// and service=) starts with the addresses prev resolved for it, and is
// next resolved when prev's would have been, as NGINX carries a zone's
// resolved peers over a reload. Then each peer of g that also is in prev
// (same server name, address and parameters) gets prev's health state,
// counters and least_time average (when both groups compare the same
// measure), and the group its resolution counters. It must be called
// before g is used by any session or resolver (it does not take g's
// locks); it takes prev's. Active connections are not carried: sessions
// of the old configuration release their peers into prev.
func (g *Group) Inherit(prev *Group) {
	g.preresolve(prev)
	if g.dynamic && prev.dynamic {
		g.resolves = prev.resolves
	}
	peers := g.Peers()
	byKey := make(map[string]*Peer, len(peers))
	for _, q := range prev.Peers() {
		byKey[q.Name+"\x00"+q.Addr.String()] = q
	}
	prev.mu.Lock()
	defer prev.mu.Unlock()
	for _, p := range peers {
		q := byKey[p.Name+"\x00"+p.Addr.String()]
		if q == nil || !samePeer(p, q) {
			continue
		}
		p.fails, p.checked, p.accessed = q.fails, q.checked, q.accessed
		// A run-time weight (SetWeight) is not carried: the balancer
		// only raises effectiveWeight toward Weight.
		p.effectiveWeight = min(q.effectiveWeight, p.Weight)
		p.nFails.Store(int64(q.fails))
		p.stats = q.stats
		if p.timedBy == q.timedBy && p.timedBy != noMeasure {
			p.times.avg.Store(q.times.avg.Load())
		}
	}
}

// preresolve gives each `resolve` server of g the addresses prev's server
// of the same host and service has now.
func (g *Group) preresolve(prev *Group) {
	if !g.dynamic || !prev.dynamic {
		return
	}
	prev.updMu.Lock()
	ps := prev.set.Load()
	due := slices.Clone(prev.due)
	prev.updMu.Unlock()
	cur := g.set.Load()
	byServer := slices.Clone(cur.byServer)
	used := make([]bool, len(prev.servers))
	changed := false
	for i, sl := range g.servers {
		if !sl.dynamic {
			continue
		}
		for j, ol := range prev.servers {
			if used[j] || !ol.dynamic || ol.host != sl.host || ol.cfg.Service != sl.cfg.Service {
				continue
			}
			used[j] = true
			var addrs []resolvedAddr
			for _, q := range ps.byServer[j] {
				addr := q.Addr
				if sl.cfg.Service == "" {
					// The address is the name's; the port is the new
					// configuration's (a reload may have changed it).
					addr = netip.AddrPortFrom(q.Addr.Addr(), sl.port)
				}
				addrs = append(addrs, resolvedAddr{addr: addr, host: q.Host, weight: q.srvWeight, backup: q.Backup && sl.cfg.Service != ""})
			}
			byServer[i] = g.peersFor(i, addrs, nil)
			g.due[i] = due[j]
			changed = true
			break
		}
	}
	if changed {
		g.set.Store(g.newSet(byServer))
	}
}
