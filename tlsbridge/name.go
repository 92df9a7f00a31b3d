package tlsbridge

import (
	"fmt"
	"strings"

	"github.com/tlsrelay/tlsrelay/engine/conf"
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

// nameVarOf maps a variable proxy_ssl_name may hold
// (conf.NameVariablesText) to its id; varNone for any other.
func nameVarOf(name string) nameVar {
	switch name {
	case "remote_addr":
		return varRemoteAddr
	case "server_addr":
		return varServerAddr
	case "server_port":
		return varServerPort
	}
	return varNone
}

// parseNameTemplate compiles s with conf's template compiler (NGINX's
// $name and ${name} rules and messages) and keeps the variables
// proxy_ssl_name may hold; any other is an error.
func parseNameTemplate(s string) (nameTemplate, error) {
	ct, err := conf.CompileTemplate(s)
	if err != nil {
		return nameTemplate{}, fmt.Errorf("proxy_ssl_name %q: %w", s, err)
	}
	t := nameTemplate{text: s, hasVars: ct.HasVars()}
	for _, p := range ct.Parts {
		if p.Var == "" {
			t.parts = append(t.parts, namePart{lit: p.Lit})
			continue
		}
		v := nameVarOf(p.Var)
		if v == varNone {
			return nameTemplate{}, fmt.Errorf("proxy_ssl_name %q: the %q variable cannot be used here (it may hold %s)", s, p.Var, conf.NameVariablesText)
		}
		t.parts = append(t.parts, namePart{v: v})
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
