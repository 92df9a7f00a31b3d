package conf

import (
	"fmt"
	"strings"
)

// Template is a directive value that may hold variables (NGINX's
// "complex value", compiled by ngx_stream_script_compile): literal text
// and variable references, in order. It is compiled once, when the
// configuration is loaded, by CompileTemplate; every directive that takes
// variables (log_format, hash, limit_conn_zone, proxy_ssl_name, ...) uses
// it, and each user maps the names to what it can evaluate. Immutable once
// compiled; safe for any goroutine.
type Template struct {
	// Text is the value as written.
	Text string
	// Parts are the literal runs and the variables, in order; empty when
	// the value holds no variable (Text is then the whole value).
	Parts []TemplatePart
}

// TemplatePart is one literal run (Var empty) or one variable of a
// Template.
type TemplatePart struct {
	// Lit is the literal text.
	Lit string
	// Var is the variable's name without "$" or braces, in lower case
	// (NGINX looks variables up case-insensitively); "1" to "9" for the
	// regex captures $1..$9, which tlsrelay never sets (they are empty).
	Var string
}

// HasVars reports whether the template holds a variable.
func (t *Template) HasVars() bool { return len(t.Parts) > 0 }

// Vars returns the names of the variables the template holds, in order,
// repeats included.
func (t *Template) Vars() []string {
	var out []string
	for _, p := range t.Parts {
		if p.Var != "" {
			out = append(out, p.Var)
		}
	}
	return out
}

// CompileTemplate splits value at its variables as NGINX does: "$name" or
// "${name}", the name made of ASCII letters, digits and "_" (a "$name"
// ends at the first other byte), "$1".."$9" the regex captures. Every
// name must be a variable NGINX's stream modules or tlsrelay define
// (knownVariable). The errors read like NGINX's and carry no position:
// the directive's parser adds the file and line.
func CompileTemplate(value string) (*Template, error) {
	return compileTemplate(value, knownVariable)
}

// compileTemplate is CompileTemplate with known deciding which names are
// variables (the parser's also knows those split_clients defines).
func compileTemplate(value string, known func(string) bool) (*Template, error) {
	t := &Template{Text: value}
	if !strings.Contains(value, "$") {
		return t, nil
	}
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			t.Parts = append(t.Parts, TemplatePart{Lit: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(value); {
		if value[i] != '$' {
			lit.WriteByte(value[i])
			i++
			continue
		}
		i++
		if i < len(value) && value[i] >= '1' && value[i] <= '9' {
			flush()
			t.Parts = append(t.Parts, TemplatePart{Var: value[i : i+1]})
			i++
			continue
		}
		braced := i < len(value) && value[i] == '{'
		if braced {
			i++
		}
		start := i
		for i < len(value) && isVarChar(value[i]) {
			i++
		}
		name := value[start:i]
		if braced {
			if i >= len(value) || value[i] != '}' {
				return nil, fmt.Errorf("the closing bracket in %q variable is missing", name)
			}
			i++
		}
		if name == "" {
			return nil, fmt.Errorf("invalid variable name in %q", value)
		}
		name = strings.ToLower(name)
		if !known(name) {
			return nil, fmt.Errorf("unknown %q variable", name)
		}
		flush()
		t.Parts = append(t.Parts, TemplatePart{Var: name})
	}
	flush()
	return t, nil
}

// compileAt is CompileTemplate for the value of directive d, with d's
// file and line in the error; the variables split_clients defines are
// known too.
func (p *parser) compileAt(d *directive, value string) (*Template, error) {
	return compileWith(d, value, p.knownVariable)
}

// compileWith is compileTemplate for the value of directive d, with d's
// file and line in the error.
func compileWith(d *directive, value string, known func(string) bool) (*Template, error) {
	t, err := compileTemplate(value, known)
	if err != nil {
		return nil, Errorf(d.pos, "%v", err)
	}
	return t, nil
}

// keyVariablesText lists the variables a key evaluated when a session
// starts, before anything is proxied, may hold: `hash` and
// `limit_conn_zone` keys (isKeyVariable).
const keyVariablesText = "$binary_remote_addr, $remote_addr, $remote_port, $server_addr, $server_port, $proxy_protocol_addr, $proxy_protocol_port"

// isKeyVariable reports whether name may appear in a `hash` or
// `limit_conn_zone` key, or in `proxy_bind`: tlsrelay evaluates these
// when a session starts, and so the variables split_clients defines
// (their keys hold only these); a key with any other variable is refused
// when the configuration is loaded.
func (p *parser) isKeyVariable(name string) bool {
	return p.isKeyOrSplitVariable(name) || p.mapVars[name] != nil
}

// isKeyOrSplitVariable is isKeyVariable without map variables: what a
// map's key and values may hold (a map does not follow another).
func (p *parser) isKeyOrSplitVariable(name string) bool {
	return isKeyVariable(name) || p.splitVars[name] != nil
}

// isKeyVariable is the parser's isKeyVariable for NGINX's variables.
func isKeyVariable(name string) bool {
	switch name {
	case "binary_remote_addr", "remote_addr", "remote_port", "server_addr", "server_port",
		"proxy_protocol_addr", "proxy_protocol_port":
		return true
	}
	return false
}

// NameVariablesText lists the variables proxy_ssl_name may hold
// (isNameVariable).
const NameVariablesText = "$remote_addr, $server_addr, $server_port"

// isNameVariable reports whether name may appear in proxy_ssl_name:
// tlsrelay evaluates these for each upstream connection; a name with any
// other variable is refused when the configuration is loaded.
func isNameVariable(name string) bool {
	switch name {
	case "remote_addr", "server_addr", "server_port":
		return true
	}
	return false
}

// compileKey compiles the key of a `hash` or `limit_conn_zone` directive
// d: a template whose variables are all key variables.
func (p *parser) compileKey(d *directive, value string) (*Template, error) {
	return p.compileLimited(d, value, p.isKeyVariable, keyVariablesText)
}

// compileName compiles the value of proxy_ssl_name: a template whose
// variables are all name variables.
func compileName(d *directive, value string) (*Template, error) {
	t, err := compileWith(d, value, knownVariable)
	if err != nil {
		return nil, err
	}
	return t, checkLimited(d, t, isNameVariable, NameVariablesText)
}

// compileLimited compiles the value of directive d, where only the
// variables ok accepts (listed in allowed, for the message) can be
// evaluated.
func (p *parser) compileLimited(d *directive, value string, ok func(string) bool, allowed string) (*Template, error) {
	t, err := p.compileAt(d, value)
	if err != nil {
		return nil, err
	}
	return t, checkLimited(d, t, ok, allowed)
}

// checkLimited refuses a template of directive d that holds a variable ok
// does not accept.
func checkLimited(d *directive, t *Template, ok func(string) bool, allowed string) error {
	for _, v := range t.Vars() {
		if !ok(v) {
			return Errorf(d.pos, "the %q variable cannot be used in \"%s\": it may hold %s", v, d.name, allowed)
		}
	}
	return nil
}
