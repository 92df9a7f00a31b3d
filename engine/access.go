package engine

import (
	"net"
	"net/netip"
	"sync"

	"github.com/panjf2000/gnet/v2"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/engine/errlog"
	"github.com/tlsrelay/tlsrelay/engine/metrics"
	"github.com/tlsrelay/tlsrelay/engine/proxyproto"
)

// clientAddr is a client's address as the rules see it: an IP, or a
// unix-domain client.
func clientAddr(a net.Addr) (ip netip.Addr, unix bool) {
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
		return ip.Unmap(), false
	case *net.UnixAddr:
		return netip.Addr{}, true
	}
	return netip.Addr{}, false
}

// ruleMatches reports whether an allow, deny or set_real_ip_from rule
// covers the client.
func ruleMatches(r *conf.AccessRule, ip netip.Addr, unix bool) bool {
	return r.All || (unix && r.Unix) || (!unix && r.Prefix.IsValid() && r.Prefix.Contains(ip))
}

// realIPFrom reports whether set_real_ip_from trusts the TCP peer to
// send the client's address in its PROXY header. Runs on the loop.
func (s *server) realIPFrom(peer net.Addr) bool {
	ip, unix := clientAddr(peer)
	for i := range s.conf.RealIPFrom {
		if ruleMatches(&s.conf.RealIPFrom[i], ip, unix) {
			return true
		}
	}
	return false
}

// allowed applies the server's allow and deny rules to a client, as
// NGINX's access module does: the first rule that matches decides; none
// matching allows. Runs on the client's loop, before any upstream work.
func (s *server) allowed(remote net.Addr) bool {
	rules := s.conf.Access
	if len(rules) == 0 {
		return true
	}
	ip, unix := clientAddr(remote)
	for i := range rules {
		if ruleMatches(&rules[i], ip, unix) {
			return !rules[i].Deny
		}
	}
	return true
}

// admit opens a session for an accepted client, or ends it at once when
// an allow/deny rule refuses it (403) or a limit_conn zone is full
// (limit_conn_status, 503 by default), before any upstream work. Runs on
// the client's loop.
func (e *Engine) admit(c gnet.Conn, lp *loop, srv *server, pp *proxyproto.Info, local net.Addr) {
	remote := c.RemoteAddr()
	if pp != nil && pp.Src != nil && srv.realIPFrom(remote) {
		remote = pp.Src // set_real_ip_from: the original client
	}
	if local == nil {
		local = c.LocalAddr()
	}
	s := e.openSessionAt(c, lp, srv, remote, local, pp)
	if !srv.allowed(remote) {
		s.status = 403
		e.log.Logf(errlog.LevelError, s.id, "access forbidden by rule, client: %s, server: %s", hostOf(s.remote), srv.name)
		s.finish(metrics.ReasonForbidden)
		return
	}
	if len(srv.conf.LimitConn) == 0 {
		e.submit(s)
		return
	}
	if zone := s.limitConns(); zone != "" {
		s.status = srv.conf.Core.LimitConnStatus
		e.log.Logf(limitLevel(srv.conf.Core.LimitConnLogLevel), s.id, "limiting connections by zone %q, client: %s, server: %s", zone, hostOf(s.remote), srv.name)
		s.finish(metrics.ReasonLimited)
		return
	}
	e.submit(s)
}

// connZone is a limit_conn_zone: the sessions open per key. Its lock is
// taken on the accept path and at a session's end, never while relaying.
// A reload keeps a zone whose name and key did not change, so the
// sessions it counts stay counted.
type connZone struct {
	name string
	key  *hashTemplate
	text string // the key as written
	mu   sync.Mutex
	open map[string]int
}

func newConnZone(z *conf.LimitConnZone) *connZone {
	return &connZone{name: z.Name, key: compileHashKey(z.KeyTemplate, nil), text: z.Key, open: map[string]int{}}
}

// limitHold is one count a session holds in a zone.
type limitHold struct {
	zone *connZone
	key  string
}

// limitConns applies the server's limit_conn directives to a new session:
// it takes one count per zone, or, when a zone is full, gives back what
// it took and returns the zone's name (with dry_run, logs and goes on).
// Runs on the client's loop.
func (s *session) limitConns() (full string) {
	srv := s.srv
	for i, l := range srv.conf.LimitConn {
		z := srv.limits[i]
		key := z.key.eval(s.remote, s.local, s.pp)
		if key == "" {
			continue // NGINX does not count an empty key
		}
		if s.limitStatus == limitNone {
			s.limitStatus = limitPassed
		}
		z.mu.Lock()
		over := z.open[key] >= l.Number
		if !over {
			z.open[key]++
		}
		z.mu.Unlock()
		if over {
			if srv.conf.Core.LimitConnDryRun {
				s.limitStatus = limitRejectedDryRun
				s.e.log.Logf(limitLevel(srv.conf.Core.LimitConnLogLevel), s.id, "limiting connections, dry run, by zone %q, client: %s, server: %s", z.name, hostOf(s.remote), srv.name)
				continue
			}
			s.limitStatus = limitRejected
			s.releaseLimits()
			return z.name
		}
		s.limits = append(s.limits, limitHold{zone: z, key: key})
	}
	return ""
}

// limitStatus is $limit_conn_status: what limit_conn did to a session.
type limitStatus uint8

const (
	limitNone           limitStatus = iota // no limit_conn counted it ("-" in a log, as NGINX's not found)
	limitPassed                            // PASSED
	limitRejected                          // REJECTED
	limitRejectedDryRun                    // REJECTED_DRY_RUN
)

// String returns NGINX's text: PASSED, REJECTED, REJECTED_DRY_RUN, or "-".
func (l limitStatus) String() string {
	switch l {
	case limitPassed:
		return "PASSED"
	case limitRejected:
		return "REJECTED"
	case limitRejectedDryRun:
		return "REJECTED_DRY_RUN"
	}
	return "-"
}

// releaseLimits gives back the session's counts. Runs on the loop.
func (s *session) releaseLimits() {
	for _, h := range s.limits {
		h.zone.mu.Lock()
		if h.zone.open[h.key]--; h.zone.open[h.key] <= 0 {
			delete(h.zone.open, h.key)
		}
		h.zone.mu.Unlock()
	}
	s.limits = nil
}

// limitLevel maps limit_conn_log_level to the error log's level.
func limitLevel(name string) errlog.Level {
	if lv, ok := errlog.ParseLevel(name); ok {
		return lv
	}
	return errlog.LevelError
}
