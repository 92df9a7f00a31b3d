package conf

import (
	"strconv"
	"strings"
)

// split_clients (ngx_stream_split_clients_module): a variable whose value
// is picked by where the MurmurHash2 of a key falls among percentages.

// SplitClients is one `split_clients key $variable { percent value; ... }`
// block of the stream level.
type SplitClients struct {
	Pos Pos
	// Key is the string hashed; only the variables known when a session
	// starts (keyVariablesText) may be in it.
	Key *Template
	// Var is the variable the block defines, without "$", lower case.
	Var string
	// Parts are the block's lines in order.
	Parts []SplitPart
}

// SplitPart is one line of a split_clients block.
type SplitPart struct {
	// Percent is the line's share in hundredths of a percent (0.5% is
	// 50, 100% is 10000); 0 for "*", which takes what the lines above
	// leave.
	Percent int
	// Value is the variable's value for the line, as written (no
	// variables: NGINX takes it literally).
	Value string
	// Bound is where the line's range of 32-bit hashes ends (the hash
	// must be below it), NGINX's sum of the shares so far scaled to
	// 0xffffffff; 0 for "*". Set when the block is parsed.
	Bound uint32
}

// Pick returns the value for a key whose MurmurHash2 is hash, as NGINX
// picks it: the first line whose range holds the hash, or a "*" line;
// "" when none does (the percentages leave that part unassigned).
func (sc *SplitClients) Pick(hash uint32) string {
	for _, p := range sc.Parts {
		if hash < p.Bound || p.Percent == 0 {
			return p.Value
		}
	}
	return ""
}

// findStreamVars records, before the stream block is parsed, the
// variables its split_clients and map blocks define, so that a directive
// above a block may name its variable, as in NGINX. The blocks are filled
// in when their directives are reached; a name defined twice is refused
// then (defineVariable).
func (p *parser) findStreamVars(block []*directive) {
	p.splitVars, p.mapVars, p.defined = map[string]*SplitClients{}, map[string]*Map{}, map[string]bool{}
	for _, c := range block {
		if (c.name != "split_clients" && c.name != "map") || len(c.args) != 2 || len(c.args[1]) < 2 || c.args[1][0] != '$' {
			continue
		}
		name := strings.ToLower(c.args[1][1:])
		switch {
		case p.splitVars[name] != nil || p.mapVars[name] != nil:
		case c.name == "map":
			p.mapVars[name] = &Map{Var: name}
		default:
			p.splitVars[name] = &SplitClients{Var: name}
		}
	}
}

// defineVariable checks the variable a split_clients or map block d
// defines as NGINX does (a "$name", not one of NGINX's own, defined once)
// and returns its name.
func (p *parser) defineVariable(d *directive) (string, error) {
	name := d.args[1]
	if len(name) < 2 || name[0] != '$' {
		return "", Errorf(d.pos, "invalid variable name %q", name)
	}
	name = strings.ToLower(name[1:])
	if knownVariable(name) || p.defined[name] {
		return "", Errorf(d.pos, "the duplicate %q variable", name)
	}
	p.defined[name] = true
	return name, nil
}

// splitClients parses a split_clients block.
func (p *parser) splitClients(d *directive, _ ctx) error {
	name, err := p.defineVariable(d)
	if err != nil {
		return err
	}
	sc := p.splitVars[name]
	if sc == nil { // in an included file, which findStreamVars did not see
		sc = &SplitClients{Var: name}
		p.splitVars[name] = sc
	}
	// The key is hashed when the session starts: it holds only what is
	// known then (not another split_clients variable, which would be a
	// loop to NGINX too).
	key, err := p.compileLimited(d, d.args[0], isKeyVariable, keyVariablesText)
	if err != nil {
		return err
	}
	sc.Pos, sc.Key = d.pos, key
	for _, c := range d.block {
		if c.isBlock {
			return Errorf(c.pos, "unexpected \"{\"")
		}
		if len(c.args) != 1 {
			return Errorf(c.pos, "invalid number of arguments in split_clients")
		}
		part := SplitPart{Value: c.args[0]}
		if c.name != "*" {
			n, ok := parsePercent(c.name)
			if !ok {
				return Errorf(c.pos, "invalid percent value %q", c.name)
			}
			part.Percent = n
		}
		sc.Parts = append(sc.Parts, part)
	}
	// As NGINX, once the block is read: the error names its "}".
	sum := 0
	var last uint32
	for i := range sc.Parts {
		part := &sc.Parts[i]
		if part.Percent == 0 {
			sum = 10000
		} else {
			sum += part.Percent
		}
		if sum > 10000 {
			return Errorf(d.end, "percent total is greater than 100%%")
		}
		if part.Percent != 0 {
			last += uint32(uint64(part.Percent) * 0xffffffff / 10000)
			part.Bound = last
		}
	}
	p.cfg.Stream.SplitClients = append(p.cfg.Stream.SplitClients, sc)
	return nil
}

// parsePercent reads "N%" or "N.NN%" as NGINX's ngx_atofp with two
// decimals does: hundredths of a percent; more than two decimals, no
// digit, or zero are refused.
func parsePercent(s string) (int, bool) {
	num, ok := strings.CutSuffix(s, "%")
	whole, frac, _ := strings.Cut(num, ".")
	if !ok || whole+frac == "" || len(frac) > 2 || len(whole) > 5 {
		return 0, false
	}
	n := 0
	for _, c := range whole + frac + strings.Repeat("0", 2-len(frac)) {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, n > 0
}

// formatSplitClients prints the split_clients blocks for -T.
func formatSplitClients(w *confWriter, at *formatAt) {
	for _, sc := range at.cfg.Stream.SplitClients {
		w.block("split_clients", []string{sc.Key.Text, "$" + sc.Var}, func() {
			for _, p := range sc.Parts {
				pct := "*"
				if p.Percent != 0 {
					pct = strconv.Itoa(p.Percent/100) + "." + strconv.Itoa(p.Percent%100/10) + strconv.Itoa(p.Percent%10) + "%"
				}
				w.line(pct, p.Value)
			}
		})
	}
}
