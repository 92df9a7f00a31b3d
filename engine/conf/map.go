package conf

import (
	"regexp"
	"strings"
)

// map (ngx_stream_map_module): a variable whose value depends on the value
// of a key, looked up among exact strings, wildcard names (hostnames) and
// regular expressions.

// Map is one `map string $variable { ... }` block of the stream level.
type Map struct {
	Pos Pos
	// Key is the string looked up; the variables known when a session
	// starts, and split_clients variables, may be in it.
	Key *Template
	// Var is the variable the block defines, without "$", lower case.
	Var string
	// Hostnames: keys may be wildcard names ("*.example.com",
	// ".example.com", "www.example.*"), and a key's trailing dot is
	// ignored.
	Hostnames bool
	// Default is the value when nothing matches; nil: "".
	Default *Template
	// Lines are the block's lines as written, for -T.
	Lines []MapLine

	exact   map[string]*Template
	head    []mapWildcard // "*.x" and ".x": the suffix, with its dot
	tail    []mapWildcard // "x.*": the prefix, with its dot
	regexes []mapRegex
}

// MapLine is one line of a map block as written.
type MapLine struct {
	Key, Value string
	// Hostnames marks the `hostnames;` line (no value).
	Hostnames bool
}

type mapWildcard struct {
	part  string // ".example.com" for "*.example.com"; "www.example." for "www.example.*"
	dot   bool   // ".example.com": the name example.com itself matches too
	value *Template
}

type mapRegex struct {
	re    *regexp.Regexp
	value *Template
}

// Find returns the value template for a key's value v, with the capture
// groups of the regular expression that matched ($1..$9; nil otherwise):
// NGINX's order is the exact string (case does not matter), the longest
// wildcard with a leading asterisk, the longest with a trailing one, the
// first regular expression in the block's order, and the default. nil
// means "".
func (m *Map) Find(v string) (*Template, []string) {
	if m.Hostnames {
		v = strings.TrimSuffix(v, ".")
	}
	low := strings.ToLower(v)
	if t, ok := m.exact[low]; ok {
		return t, nil
	}
	if m.Hostnames {
		best := -1
		for i, w := range m.head {
			if (strings.HasSuffix(low, w.part) && len(low) > len(w.part)) || (w.dot && low == w.part[1:]) {
				if best < 0 || len(w.part) > len(m.head[best].part) {
					best = i
				}
			}
		}
		if best >= 0 {
			return m.head[best].value, nil
		}
		for i, w := range m.tail {
			if strings.HasPrefix(low, w.part) && len(low) > len(w.part) {
				if best < 0 || len(w.part) > len(m.tail[best].part) {
					best = i
				}
			}
		}
		if best >= 0 {
			return m.tail[best].value, nil
		}
	}
	for _, r := range m.regexes {
		if sub := r.re.FindStringSubmatch(v); sub != nil {
			return r.value, sub
		}
	}
	return m.Default, nil
}

// isMapValueVariable reports whether name may appear in a map's value:
// what a key may hold, and the regular expression's captures.
func (p *parser) isMapValueVariable(name string) bool {
	return (len(name) == 1 && name[0] >= '1' && name[0] <= '9') || p.isKeyOrSplitVariable(name)
}

// mapBlock parses a map block.
func (p *parser) mapBlock(d *directive, _ ctx) error {
	name, err := p.defineVariable(d)
	if err != nil {
		return err
	}
	m := p.mapVars[name]
	if m == nil { // in an included file, which findStreamVars did not see
		m = &Map{Var: name}
		p.mapVars[name] = m
	}
	// The key may hold what a key may, and split_clients variables (not
	// another map's: NGINX would follow it, tlsrelay does not).
	key, err := p.compileLimited(d, d.args[0], p.isKeyOrSplitVariable, keyVariablesText+" and split_clients variables")
	if err != nil {
		return err
	}
	m.Pos, m.Key = d.pos, key
	m.exact = map[string]*Template{}
	// seen are the keys added, for NGINX's "conflicting parameter": the
	// exact ones lower case, the wildcards as "wc " and their text (a
	// ".x" wildcard as "*.x" and as the exact x).
	seen := map[string]bool{}
	for _, c := range d.block {
		if c.isBlock {
			return Errorf(c.pos, "unexpected \"{\"")
		}
		if len(c.args) == 0 && c.name == "hostnames" {
			m.Hostnames = true
			m.Lines = append(m.Lines, MapLine{Key: "hostnames", Hostnames: true})
			continue
		}
		if len(c.args) != 1 {
			return Errorf(c.pos, "invalid number of the map parameters")
		}
		if c.name == "include" {
			return Errorf(c.pos, "\"include\" in a map block is not supported")
		}
		val, err := p.compileLimited(c, c.args[0], p.isMapValueVariable, keyVariablesText+", split_clients variables and $1..$9")
		if err != nil {
			return err
		}
		m.Lines = append(m.Lines, MapLine{Key: c.name, Value: c.args[0]})
		if err := m.add(c, val, seen); err != nil {
			return err
		}
	}
	p.cfg.Stream.Maps = append(p.cfg.Stream.Maps, m)
	return nil
}

// add adds one line of the block: its key c.name and value val.
func (m *Map) add(c *directive, val *Template, seen map[string]bool) error {
	k := c.name
	if k == "default" {
		if m.Default != nil {
			return Errorf(c.pos, "duplicate default map parameter")
		}
		m.Default = val
		return nil
	}
	if strings.HasPrefix(k, "~") {
		expr := k[1:]
		if strings.HasPrefix(expr, "*") {
			expr = "(?i)" + expr[1:]
		}
		re, err := regexp.Compile(expr)
		if err != nil {
			return Errorf(c.pos, "invalid regular expression %q: %v", k, err)
		}
		m.regexes = append(m.regexes, mapRegex{re: re, value: val})
		return nil
	}
	k = strings.TrimPrefix(k, "\\")
	low := strings.ToLower(k)
	if m.Hostnames && (strings.HasPrefix(low, "*") || strings.HasPrefix(low, ".") || strings.HasSuffix(low, "*")) {
		return m.addWildcard(c, k, low, val, seen)
	}
	if m.Hostnames && strings.Contains(low, "*") {
		return Errorf(c.pos, "invalid hostname or wildcard %q", k)
	}
	if m.Hostnames {
		low = strings.TrimSuffix(low, ".")
	}
	if seen[low] {
		return Errorf(c.pos, "conflicting parameter %q", k)
	}
	seen[low] = true
	m.exact[low] = val
	return nil
}

// addWildcard adds a wildcard key of a hostnames map.
func (m *Map) addWildcard(c *directive, k, low string, val *Template, seen map[string]bool) error {
	var w mapWildcard
	switch {
	case strings.HasPrefix(low, "*.") && !strings.Contains(low[2:], "*") && len(low) > 2:
		w = mapWildcard{part: low[1:], value: val}
	case strings.HasPrefix(low, ".") && !strings.Contains(low, "*") && len(low) > 1:
		w = mapWildcard{part: low, dot: true, value: val}
	case strings.HasSuffix(low, ".*") && !strings.Contains(low[:len(low)-2], "*") && len(low) > 2:
		w = mapWildcard{part: low[:len(low)-1], value: val}
	default:
		return Errorf(c.pos, "invalid hostname or wildcard %q", k)
	}
	id := "wc " + low
	if w.dot {
		// ".example.com" is "*.example.com" and "example.com" at once.
		id = "wc *" + low
		if seen[low[1:]] {
			return Errorf(c.pos, "conflicting parameter %q", k)
		}
		seen[low[1:]] = true
	}
	if seen[id] {
		return Errorf(c.pos, "conflicting parameter %q", k)
	}
	seen[id] = true
	if strings.HasSuffix(low, "*") {
		m.tail = append(m.tail, w)
	} else {
		m.head = append(m.head, w)
	}
	return nil
}

// formatMaps prints the map blocks for -T.
func formatMaps(w *confWriter, at *formatAt) {
	for _, m := range at.cfg.Stream.Maps {
		w.block("map", []string{m.Key.Text, "$" + m.Var}, func() {
			for _, l := range m.Lines {
				if l.Hostnames {
					w.line("hostnames")
					continue
				}
				w.line(l.Key, l.Value)
			}
		})
	}
}

// Values returns every value template of the map, the default's too.
func (m *Map) Values() []*Template {
	var out []*Template
	if m.Default != nil {
		out = append(out, m.Default)
	}
	for _, t := range m.exact {
		out = append(out, t)
	}
	for _, w := range append(append([]mapWildcard(nil), m.head...), m.tail...) {
		out = append(out, w.value)
	}
	for _, r := range m.regexes {
		out = append(out, r.value)
	}
	return out
}
