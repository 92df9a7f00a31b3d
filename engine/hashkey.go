package engine

import (
	"net"
	"net/netip"
	"strings"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/engine/errlog"
	"github.com/tlsrelay/tlsrelay/engine/metrics"
	"github.com/tlsrelay/tlsrelay/engine/proxyproto"
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
	keyPPAddr // $proxy_protocol_addr: empty without a PROXY header
	keyPPPort
	keyEmpty   // $1..$9: tlsrelay has no regex captures
	keySplit   // a split_clients variable (keyPart.split)
	keyMap     // a map variable (keyPart.mapv)
	keyCapture // $1..$9 in a map's value: the matching regex's group (keyPart.n)
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
	case "proxy_protocol_addr":
		return keyPPAddr
	case "proxy_protocol_port":
		return keyPPPort
	}
	return keyEmpty
}

// keyPart is literal text or one variable of a key.
type keyPart struct {
	lit   string
	v     keyVar
	split *splitVar // keySplit's
	mapv  *mapVar   // keyMap's
	n     int       // keyCapture's group
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
// variable that is not a key variable, one of vars, or a capture in a
// map's value).
func compileHashKey(t *conf.Template, vars *sessionVars) *hashTemplate {
	h := &hashTemplate{static: t.Text, vars: t.HasVars()}
	for _, p := range t.Parts {
		switch {
		case p.Var == "":
			h.parts = append(h.parts, keyPart{lit: p.Lit})
		case vars != nil && vars.splits[p.Var] != nil:
			h.parts = append(h.parts, keyPart{v: keySplit, split: vars.splits[p.Var]})
		case vars != nil && vars.maps[p.Var] != nil:
			h.parts = append(h.parts, keyPart{v: keyMap, mapv: vars.maps[p.Var]})
		case len(p.Var) == 1 && p.Var[0] >= '1' && p.Var[0] <= '9':
			h.parts = append(h.parts, keyPart{v: keyCapture, n: int(p.Var[0] - '0')})
		default:
			h.parts = append(h.parts, keyPart{v: keyVarOf(p.Var)})
		}
	}
	return h
}

// splitVar is a split_clients variable: its key, compiled, and the
// block's lines. Immutable; any goroutine.
type splitVar struct {
	key *hashTemplate
	sc  *conf.SplitClients
}

// sessionVars are the variables a configuration defines (split_clients,
// map), by name, compiled. Immutable; any goroutine.
type sessionVars struct {
	splits map[string]*splitVar
	maps   map[string]*mapVar
}

// compileVars builds the variables of the stream level's split_clients
// and map blocks.
func compileVars(st *conf.Stream) *sessionVars {
	v := &sessionVars{splits: map[string]*splitVar{}, maps: map[string]*mapVar{}}
	for _, sc := range st.SplitClients {
		v.splits[sc.Var] = &splitVar{key: compileHashKey(sc.Key, nil), sc: sc}
	}
	// A map's key and values may hold split_clients variables, not
	// another map's (conf refuses them).
	for _, m := range st.Maps {
		mv := &mapVar{key: compileHashKey(m.Key, v), m: m, values: map[*conf.Template]*hashTemplate{}}
		for _, t := range m.Values() {
			mv.values[t] = compileHashKey(t, v)
		}
		v.maps[m.Var] = mv
	}
	return v
}

// has reports whether name is one of the variables.
func (v *sessionVars) has(name string) bool { return v.splits[name] != nil || v.maps[name] != nil }

// unknownAtStart returns the first variable of t whose value is not known
// when a session starts (neither a key variable nor a map or split one),
// "" when there is none. Runs in buildPlan.
func (v *sessionVars) unknownAtStart(t *conf.Template) string {
	for _, name := range t.Vars() {
		if keyVarOf(name) == keyEmpty && !v.has(name) {
			return name
		}
	}
	return ""
}

// mapVar is a map variable: its key and its values, compiled.
type mapVar struct {
	key    *hashTemplate
	m      *conf.Map
	values map[*conf.Template]*hashTemplate
}

// eval returns the variable's value for a session with the given
// addresses. Runs on the session's loop.
func (v *mapVar) eval(remote, local net.Addr, pp *proxyproto.Info) string {
	t, caps := v.m.Find(v.key.eval(remote, local, pp))
	if t == nil {
		return ""
	}
	return v.values[t].evalCaptures(remote, local, pp, caps)
}

// eval returns the variable's value for a session with the given
// addresses. Runs on the session's loop.
func (v *splitVar) eval(remote, local net.Addr, pp *proxyproto.Info) string {
	return v.sc.Pick(murmurHash2(v.key.eval(remote, local, pp)))
}

// murmurHash2 is NGINX's ngx_murmur_hash2: Austin Appleby's MurmurHash2
// with seed 0 over s, little-endian 4-byte blocks, as split_clients
// hashes its key.
func murmurHash2(s string) uint32 {
	const m = 0x5bd1e995
	h := uint32(len(s))
	for len(s) >= 4 {
		k := uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24
		k *= m
		k ^= k >> 24
		k *= m
		h *= m
		h ^= k
		s = s[4:]
	}
	switch len(s) {
	case 3:
		h ^= uint32(s[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(s[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(s[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}

// eval returns the key for a session with the given addresses and PROXY
// header (nil: none). Runs on the session's loop.
func (t *hashTemplate) eval(remote, local net.Addr, pp *proxyproto.Info) string {
	return t.evalCaptures(remote, local, pp, nil)
}

// evalCaptures is eval with a regular expression's groups for $1..$9
// (a map's value). Runs on the session's loop.
func (t *hashTemplate) evalCaptures(remote, local net.Addr, pp *proxyproto.Info, caps []string) string {
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
		case keyPPAddr:
			if pp != nil && pp.Src != nil {
				b.WriteString(hostOf(pp.Src))
			}
		case keyPPPort:
			if pp != nil && pp.Src != nil {
				b.WriteString(portOf(pp.Src))
			}
		case keySplit:
			b.WriteString(p.split.eval(remote, local, pp))
		case keyMap:
			b.WriteString(p.mapv.eval(remote, local, pp))
		case keyCapture:
			if p.n < len(caps) {
				b.WriteString(caps[p.n])
			}
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

// bindLocal sets the dial's source address from proxy_bind's variables,
// as NGINX's proxy does before it connects: an empty value binds nothing,
// an IP address is the source; anything else is logged ("invalid local
// address") and ends the session with 500, without a dial. It reports
// whether the session goes on. Runs on the session's loop, before the
// dial job is submitted.
func (s *session) bindLocal() bool {
	v := s.srv.bindVar.eval(s.remote, s.local, s.pp)
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
