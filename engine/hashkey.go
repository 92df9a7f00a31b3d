package engine

import (
	"net"
	"strings"
)

// keyVar is a variable an upstream hash key may hold.
type keyVar uint8

const (
	keyLiteral keyVar = iota
	keyRemoteAddr
	keyRemotePort
	keyServerAddr
	keyServerPort
)

var keyVarNames = [...]struct {
	name string
	v    keyVar
}{
	{"$remote_addr", keyRemoteAddr},
	{"$remote_port", keyRemotePort},
	{"$server_addr", keyServerAddr},
	{"$server_port", keyServerPort},
}

// keyPart is literal text or one variable of a hash key.
type keyPart struct {
	lit string
	v   keyVar
}

// hashTemplate is an upstream block's `hash` key, compiled once when the
// configuration is built: literal text and the variables $remote_addr,
// $remote_port, $server_addr and $server_port. Immutable; any goroutine.
type hashTemplate struct {
	parts []keyPart
	// static is the key when it holds no variable.
	static string
	vars   bool
}

// compileHashKey compiles the key text of a `hash` directive.
func compileHashKey(tmpl string) *hashTemplate {
	t := &hashTemplate{static: tmpl}
	if !strings.Contains(tmpl, "$") {
		return t
	}
	lit := strings.Builder{}
	for i := 0; i < len(tmpl); {
		matched := false
		if tmpl[i] == '$' {
			for _, kv := range keyVarNames {
				if strings.HasPrefix(tmpl[i:], kv.name) {
					if lit.Len() > 0 {
						t.parts = append(t.parts, keyPart{lit: lit.String()})
						lit.Reset()
					}
					t.parts = append(t.parts, keyPart{v: kv.v})
					i += len(kv.name)
					matched = true
					break
				}
			}
		}
		if !matched {
			lit.WriteByte(tmpl[i])
			i++
		}
	}
	if lit.Len() > 0 {
		t.parts = append(t.parts, keyPart{lit: lit.String()})
	}
	t.vars = true
	return t
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

// hashKey evaluates the upstream block's hash key for a session; "" when
// the block does not balance by hash.
func (s *server) hashKey(remote, local net.Addr) string {
	if s.hash == nil {
		return ""
	}
	return s.hash.eval(remote, local)
}
