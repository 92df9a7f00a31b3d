package conf

import "strings"

// Insecure returns warnings for legal but insecure settings of servers
// with proxy_ssl on: proxy_ssl_verify off, protocols older than TLS 1.2,
// and proxy_ssl_key_log. `tlsrelay -t` prints them without failing. A
// setting inherited by several servers is reported once, at the directive.
func (c *Config) Insecure() []Warning {
	if c.Stream == nil {
		return nil
	}
	var out []Warning
	seen := map[Warning]bool{}
	add := func(w Warning) {
		if !seen[w] {
			seen[w] = true
			out = append(out, w)
		}
	}
	for _, srv := range c.Stream.Servers {
		s := &srv.Proxy.SSL
		if !s.Enabled {
			continue
		}
		if !s.Verify {
			pos, ok := s.Pos["proxy_ssl_verify"]
			if !ok {
				pos = s.Pos["proxy_ssl"]
			}
			add(Warning{Pos: pos, Msg: "\"proxy_ssl_verify\" is off: the upstream certificate is not verified " +
				"and anyone on the path can impersonate the upstream"})
		}
		var old []string
		for _, v := range s.Protocols {
			switch v {
			case "SSLv2", "SSLv3", "TLSv1", "TLSv1.1":
				old = append(old, v)
			}
		}
		if len(old) > 0 {
			add(Warning{Pos: s.Pos["proxy_ssl_protocols"],
				Msg: "\"proxy_ssl_protocols\" enables " + strings.Join(old, " ") + ", which are insecure"})
		}
		if s.KeyLog != "" {
			add(Warning{Pos: s.Pos["proxy_ssl_key_log"],
				Msg: "\"proxy_ssl_key_log\" is for debugging: it writes the TLS secrets of every upstream connection to " + s.KeyLog})
		}
	}
	return out
}
