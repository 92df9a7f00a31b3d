package tlsbridge

import (
	"fmt"
	"strings"
)

// nameTemplate is proxy_ssl_name split into literal text and variables.
type nameTemplate struct {
	text    string // the raw value
	hasVars bool
	parts   []namePart
}

type namePart struct {
	lit string
	v   nameVar
}

type nameVar int

const (
	varNone nameVar = iota
	varRemoteAddr
	varServerAddr
	varServerPort
)

// nameVars are the variables proxy_ssl_name may use.
var nameVars = map[string]nameVar{
	"remote_addr": varRemoteAddr,
	"server_addr": varServerAddr,
	"server_port": varServerPort,
}

// parseNameTemplate splits s at $name and ${name} references. Unknown
// variables are an error, as in NGINX ("unknown variable").
func parseNameTemplate(s string) (nameTemplate, error) {
	t := nameTemplate{text: s}
	var lit strings.Builder
	for i := 0; i < len(s); {
		if s[i] != '$' {
			lit.WriteByte(s[i])
			i++
			continue
		}
		j := i + 1
		var name string
		if j < len(s) && s[j] == '{' {
			end := strings.IndexByte(s[j:], '}')
			if end < 0 {
				return nameTemplate{}, fmt.Errorf("proxy_ssl_name %q: missing closing bracket in variable", s)
			}
			name = s[j+1 : j+end]
			j += end + 1
		} else {
			k := j
			for k < len(s) && (s[k] == '_' || s[k] >= 'a' && s[k] <= 'z' || s[k] >= 'A' && s[k] <= 'Z' || s[k] >= '0' && s[k] <= '9') {
				k++
			}
			name = s[j:k]
			j = k
		}
		if name == "" {
			return nameTemplate{}, fmt.Errorf("proxy_ssl_name %q: invalid variable name at offset %d", s, i)
		}
		v, ok := nameVars[strings.ToLower(name)]
		if !ok {
			return nameTemplate{}, fmt.Errorf("proxy_ssl_name %q: unknown variable \"$%s\" (supported: $remote_addr, $server_addr, $server_port)", s, name)
		}
		if lit.Len() > 0 {
			t.parts = append(t.parts, namePart{lit: lit.String()})
			lit.Reset()
		}
		t.parts = append(t.parts, namePart{v: v})
		t.hasVars = true
		i = j
	}
	if lit.Len() > 0 {
		t.parts = append(t.parts, namePart{lit: lit.String()})
	}
	return t, nil
}

// eval returns the name for one connection.
func (t *nameTemplate) eval(v Vars) string {
	if !t.hasVars {
		return t.text
	}
	var b strings.Builder
	for _, p := range t.parts {
		switch p.v {
		case varRemoteAddr:
			b.WriteString(v.RemoteAddr)
		case varServerAddr:
			b.WriteString(v.ServerAddr)
		case varServerPort:
			b.WriteString(v.ServerPort)
		default:
			b.WriteString(p.lit)
		}
	}
	return b.String()
}
