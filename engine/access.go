package engine

import (
	"net"
	"net/netip"

	"github.com/panjf2000/gnet/v2"
)

// allowed applies the server's allow and deny rules to a client, as
// NGINX's access module does: the first rule that matches decides; none
// matching allows. Runs on the client's loop, before any upstream work.
func (s *server) allowed(remote net.Addr) bool {
	rules := s.conf.Access
	if len(rules) == 0 {
		return true
	}
	var ip netip.Addr
	unix := false
	switch a := remote.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
		ip = ip.Unmap()
	case *net.UnixAddr:
		unix = true
	}
	for _, r := range rules {
		if r.All || (unix && r.Unix) || (!unix && r.Prefix.IsValid() && r.Prefix.Contains(ip)) {
			return !r.Deny
		}
	}
	return true
}

// forbid ends a client that an allow/deny rule refused: logged as NGINX
// does, 403 in the access log, counted, and closed without any upstream
// work. Runs on the client's loop.
func (e *Engine) forbid(c gnet.Conn, lp *loop, srv *server) {
	s := e.openSession(c, lp, srv)
	s.status = 403
	e.log.Logf(LevelError, s.id, "access forbidden by rule, client: %s, server: %s", hostOf(s.remote), srv.name)
	s.finish("access forbidden")
}
