package pool

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
// and the same peers (server name, address, parameters) in the same order.
// Safe from any goroutine.
func (g *Group) SameAs(o *Group) bool {
	if g.name != o.name || g.method != o.method || g.balancer != o.balancer || len(g.peers) != len(o.peers) {
		return false
	}
	for i, p := range g.peers {
		if !samePeer(p, o.peers[i]) {
			return false
		}
	}
	return true
}

// samePeer reports whether p and q are one server address with the same
// parameters.
func samePeer(p, q *Peer) bool {
	return p.Addr == q.Addr && p.Name == q.Name && p.Weight == q.Weight && p.MaxFails == q.MaxFails &&
		p.MaxConns == q.MaxConns && p.FailTimeout == q.FailTimeout && p.Backup == q.Backup && p.Down == q.Down
}

// Inherit gives each peer of g that also is in prev (same server name,
// address and parameters) prev's health state and counters. It must be
// called before g is used by any session (it does not take g's lock); it
// takes prev's. Active connections are not carried: sessions of the old
// configuration release their peers into prev.
func (g *Group) Inherit(prev *Group) {
	byKey := make(map[string]*Peer, len(prev.peers))
	for _, q := range prev.peers {
		byKey[q.Name+"\x00"+q.Addr.String()] = q
	}
	prev.mu.Lock()
	defer prev.mu.Unlock()
	for _, p := range g.peers {
		q := byKey[p.Name+"\x00"+p.Addr.String()]
		if q == nil || !samePeer(p, q) {
			continue
		}
		p.fails, p.checked, p.accessed = q.fails, q.checked, q.accessed
		p.effectiveWeight = q.effectiveWeight
		p.nFails.Store(int64(q.fails))
		p.stats = q.stats
	}
}
