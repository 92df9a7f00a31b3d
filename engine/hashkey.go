package engine

import (
	"net"
	"net/netip"
	"strings"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/engine/errlog"
	"github.com/tlsrelay/tlsrelay/engine/metrics"
)

// keyVar is a variable a key evaluated when a session starts may hold
// (conf's key variables): a `hash` or `limit_conn_zone` key.
type keyVar uint8

const (
	keyLiteral keyVar = iota
	keyBinaryRemoteAddr
	keyRemoteAddr
	keyRemotePort
	keyServerAddr
	keyServerPort
	keyEmpty // $1..$9: tlsrelay has no regex captures
)

// keyVarOf maps a key variable's name to its id.
func keyVarOf(name string) keyVar {
	switch name {
	case "binary_remote_addr":
		return keyBinaryRemoteAddr
	case "remote_addr":
		return keyRemoteAddr
	case "remote_port":
		return keyRemotePort
	case "server_addr":
		return keyServerAddr
	case "server_port":
		return keyServerPort
	}
	return keyEmpty
}

// keyPart is literal text or one variable of a key.
type keyPart struct {
	lit string
	v   keyVar
}

// hashTemplate is a `hash` or `limit_conn_zone` key, built once with the
// configuration from its compiled conf.Template. Immutable; any
// goroutine.
type hashTemplate struct {
	parts []keyPart
	// static is the key when it holds no variable.
	static string
	vars   bool
}

// compileHashKey builds a key from its template (conf has refused every
// variable that is not a key variable).
func compileHashKey(t *conf.Template) *hashTemplate {
	h := &hashTemplate{static: t.Text, vars: t.HasVars()}
	for _, p := range t.Parts {
		if p.Var == "" {
			h.parts = append(h.parts, keyPart{lit: p.Lit})
		} else {
			h.parts = append(h.parts, keyPart{v: keyVarOf(p.Var)})
		}
	}
	return h
}

// eval returns the key for a session with the given addresses. Runs on
// the session's loop.
func (t *hashTemplate) eval(remote, local net.Addr) string {
	if !t.vars {
		return t.static
	}
	var b strings.Builder
	for _, p := range t.parts {
		switch p.v {
		case keyLiteral:
			b.WriteString(p.lit)
		case keyBinaryRemoteAddr:
			b.WriteString(binaryAddr(remote))
		case keyRemoteAddr:
			b.WriteString(hostOf(remote))
		case keyRemotePort:
			b.WriteString(portOf(remote))
		case keyServerAddr:
			b.WriteString(hostOf(local))
		case keyServerPort:
			b.WriteString(portOf(local))
		}
	}
	return b.String()
}

// binaryAddr is $binary_remote_addr: the address in network byte order,
// 4 bytes for IPv4 (an IPv4-mapped IPv6 address too, as NGINX sees it on
// an IPv4 socket) and 16 for IPv6; empty for a unix domain client.
func binaryAddr(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return ""
	}
	if ip4 := ta.IP.To4(); ip4 != nil {
		return string(ip4)
	}
	return string(ta.IP.To16())
}

// hashKey evaluates the upstream block's hash key for a session; "" when
// the block does not balance by hash.
func (s *server) hashKey(remote, local net.Addr) string {
	if s.hash == nil {
		return ""
	}
	return s.hash.eval(remote, local)
}

// bindLocal sets the dial's source address from proxy_bind's variables,
// as NGINX's proxy does before it connects: an empty value binds nothing,
// an IP address is the source; anything else is logged ("invalid local
// address") and ends the session with 500, without a dial. It reports
// whether the session goes on. Runs on the session's loop, before the
// dial job is submitted.
func (s *session) bindLocal() bool {
	v := s.srv.bindVar.eval(s.remote, s.local)
	if v == "" {
		return true
	}
	ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(v, "["), "]"))
	if err != nil {
		s.e.log.Logf(errlog.LevelError, s.id, "invalid local address \"%s\" while connecting to upstream, client: %s, server: %s",
			v, hostOf(s.remote), s.srv.name)
		s.status = 500
		s.finish(metrics.ReasonUpstreamUnreachable)
		return false
	}
	s.dial.job.Socket.Bind = ip.Unmap()
	return true
}
