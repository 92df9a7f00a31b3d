package conf

import (
	"strconv"
	"strings"
)

// The proxy_ssl* directives that need more than a slot row (the others
// are rows of sslDirectives in table.go).

// nameArg is proxy_ssl_name's value: text and the variables a name may
// hold.
func nameArg(d *directive, v *string) error {
	*v = d.args[0]
	_, err := compileName(d, d.args[0])
	return err
}

// certificatePath resolves proxy_ssl_certificate's file, which may hold
// variables.
func certificatePath(p *parser, d *directive) (string, error) {
	return p.confPath(d.args[0]), checkVariables(d, d.args[0])
}

// certificateKeyPath resolves proxy_ssl_certificate_key's file, which may
// hold variables.
func certificateKeyPath(p *parser, d *directive) (string, error) {
	return keyPath(p, d.args[0]), checkVariables(d, d.args[0])
}

// keyPath resolves a certificate key path; engine: and store: URIs are
// kept as written.
func keyPath(p *parser, name string) string {
	if strings.HasPrefix(name, "engine:") || strings.HasPrefix(name, "store:") || strings.HasPrefix(name, "data:") {
		return name
	}
	return p.confPath(name)
}

// confFile resolves a file name against the configuration prefix.
func confFile(p *parser, d *directive) (string, error) {
	return p.confPath(d.args[0]), nil
}

// mergeProtocols is ngx_conf_set_bitmask_slot over the TLS versions: values
// add up, repeated ones are warned about.
func mergeProtocols(p *parser, m *mergeable, d *directive) error {
	for _, a := range d.args {
		canon := ""
		for _, v := range []string{"SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"} {
			if strings.EqualFold(a, v) {
				canon = v
			}
		}
		if canon == "" {
			return Errorf(d.pos, "invalid value %q", a)
		}
		dup := false
		for _, have := range m.Proxy.SSL.Protocols {
			dup = dup || have == canon
		}
		if dup {
			p.warnf(d.pos, "duplicate value %q", a)
			continue
		}
		m.Proxy.SSL.Protocols = append(m.Proxy.SSL.Protocols, canon)
	}
	order := map[string]int{"SSLv2": 0, "SSLv3": 1, "TLSv1": 2, "TLSv1.1": 3, "TLSv1.2": 4, "TLSv1.3": 5}
	ps := m.Proxy.SSL.Protocols
	for i := 1; i < len(ps); i++ {
		for j := i; j > 0 && order[ps[j]] < order[ps[j-1]]; j-- {
			ps[j], ps[j-1] = ps[j-1], ps[j]
		}
	}
	return nil
}

// mergeConfCommand is `proxy_ssl_conf_command name value`; the commands
// of a level add up.
func mergeConfCommand(p *parser, m *mergeable, d *directive) error {
	value := d.args[1]
	if strings.EqualFold(d.args[0], "Certificate") || strings.EqualFold(d.args[0], "PrivateKey") {
		// Files, resolved against the prefix as proxy_ssl_certificate's.
		value = p.prefixPath(value)
	}
	m.Proxy.SSL.ConfCommands = append(m.Proxy.SSL.ConfCommands, ConfCommand{Name: d.args[0], Value: value, Pos: d.pos})
	return nil
}

// mergeALPN is `proxy_ssl_alpn protocol ...`.
func mergeALPN(_ *parser, m *mergeable, d *directive) error {
	for _, a := range d.args {
		if len(a) == 0 || len(a) > 255 {
			return Errorf(d.pos, "invalid value %q in %q directive", a, d.name)
		}
		if err := checkVariables(d, a); err != nil {
			return err
		}
	}
	m.Proxy.SSL.ALPN = append([]string(nil), d.args...)
	return nil
}

// mergeIdentities is `proxy_ssl_verify_identity identity ...` (tlsrelay's
// own): each "uri:...", "dns:..." or "cn:...", checked as the policy
// parses them.
func mergeIdentities(_ *parser, m *mergeable, d *directive) error {
	for _, a := range d.args {
		if _, err := ParseIdentity(a); err != nil {
			return Errorf(d.pos, "invalid value %q in %q directive: %v", a, d.name, err)
		}
	}
	m.Proxy.SSL.Identities = append([]string(nil), d.args...)
	return nil
}

// mergeCertificateCache is `proxy_ssl_certificate_cache off | max=N
// [inactive=time] [valid=time]`.
func mergeCertificateCache(p *parser, m *mergeable, d *directive) error {
	c := CertificateCache{Inactive: 10e9, Valid: 60e9}
	if d.args[0] == "off" {
		if len(d.args) > 1 {
			return Errorf(d.pos, "invalid parameter %q", d.args[1])
		}
		m.Proxy.SSL.CertificateCache = c
		return nil
	}
	for _, a := range d.args {
		name, val, _ := strings.Cut(a, "=")
		var ok bool
		switch name {
		case "max":
			c.Max, ok = atoiInt(val)
			ok = ok && c.Max > 0
		case "inactive":
			c.Inactive, ok = ParseDuration(val, true)
		case "valid":
			c.Valid, ok = ParseDuration(val, true)
		}
		if !ok {
			return Errorf(d.pos, "invalid parameter %q", a)
		}
	}
	if c.Max == 0 {
		return Errorf(d.pos, "%q must have \"max\" parameter", d.name)
	}
	m.Proxy.SSL.CertificateCache = c
	return nil
}

// formatCertificateCache prints proxy_ssl_certificate_cache when it is on.
func formatCertificateCache(w *confWriter, at *formatAt) {
	if c := at.lvl.Proxy.SSL.CertificateCache; c.Max > 0 {
		w.line("proxy_ssl_certificate_cache", "max="+strconv.Itoa(c.Max),
			"inactive="+formatDuration(c.Inactive), "valid="+formatDuration(c.Valid))
	}
}

// mergeKeyLog is `proxy_ssl_key_log file` (no variables).
func mergeKeyLog(p *parser, m *mergeable, d *directive) error {
	if strings.Contains(d.args[0], "$") {
		return Errorf(d.pos, "variables in %q are not supported", d.name)
	}
	m.Proxy.SSL.KeyLog = p.prefixPath(d.args[0])
	return nil
}
