package pool

import "net/netip"

// unixPeer makes the one peer of a "unix:/path" server line: a unix
// domain socket has no name to resolve and no port. Its Host is empty, so
// the TLS layer has no name to send or verify unless proxy_ssl_name gives
// one. Runs inside NewGroup.
func (sl *serverSlot) unixPeer(path string) *Peer {
	p := sl.newPeer(netip.AddrPort{}, "", sl.cfg.Weight, 0, sl.cfg.Backup)
	p.Path, p.text = path, sl.cfg.Addr
	return p
}

// HasUnix reports whether a server of the group is a unix domain socket.
// Safe from any goroutine.
func (g *Group) HasUnix() bool {
	for _, p := range g.Peers() {
		if p.Path != "" {
			return true
		}
	}
	return false
}

// Network returns the network ("tcp" or "unix") and address Dial takes
// for the peer. Safe from any goroutine.
func (p *Peer) Network() (network, addr string) {
	if p.Path != "" {
		return "unix", p.Path
	}
	return "tcp", p.Addr.String()
}
