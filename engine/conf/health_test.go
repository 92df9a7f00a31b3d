package conf

import (
	"testing"
	"time"
)

// hcConf is a stream block with a zoned upstream, a match block and one
// server with the given body.
func hcConf(stream, body string) string {
	return "stream {\n" + stream + "\nupstream b { zone b 64k; server 127.0.0.1:1; }\n" +
		"match m { send \"PING\\r\\n\\x00\"; expect ~* \"^pong\"; }\n" +
		"server { listen 80; proxy_pass b;\n" + body + "\n}\n}\n"
}

func TestHealthCheckParse(t *testing.T) {
	cfg, _, msg := parseIn(t, hcConf("health_check_timeout 2s;",
		"health_check interval=250ms jitter=1s fails=3 passes=2 port=8443 match=m mandatory persistent;"), LoadOptions{})
	if msg != "" {
		t.Fatal(msg)
	}
	s := cfg.Stream.Servers[0]
	hc := s.HealthCheck
	want := HealthCheck{Pos: hc.Pos, Interval: 250 * time.Millisecond, Jitter: time.Second, Fails: 3, Passes: 2,
		Port: 8443, Mandatory: true, Persistent: true, Match: "m"}
	if *hc != want {
		t.Fatalf("health_check %+v, want %+v", *hc, want)
	}
	if hc.Pos.Line != 6 {
		t.Errorf("position %v, want line 6", hc.Pos)
	}
	if s.HealthCheckTimeout != 2*time.Second {
		t.Errorf("inherited health_check_timeout %v, want 2s", s.HealthCheckTimeout)
	}
	m := cfg.Stream.Matches["m"]
	if m == nil || m.Send != "PING\r\n\x00" || m.Regexp == nil || !m.Regexp.MatchString("PONG 1") || m.Expect != "" {
		t.Fatalf("match %+v", m)
	}

	// Defaults, and a server's own timeout.
	cfg, _, msg = parseIn(t, hcConf("", "health_check; health_check_timeout 300ms;"), LoadOptions{})
	if msg != "" {
		t.Fatal(msg)
	}
	s = cfg.Stream.Servers[0]
	if hc := s.HealthCheck; hc.Interval != 5*time.Second || hc.Jitter != 0 || hc.Fails != 1 || hc.Passes != 1 || hc.Port != 0 || hc.Match != "" {
		t.Errorf("defaults %+v", *hc)
	}
	if s.HealthCheckTimeout != 300*time.Millisecond {
		t.Errorf("health_check_timeout %v", s.HealthCheckTimeout)
	}
	cfg, _, msg = parseIn(t, hcConf("", ""), LoadOptions{})
	if msg != "" {
		t.Fatal(msg)
	}
	if s := cfg.Stream.Servers[0]; s.HealthCheck != nil || s.HealthCheckTimeout != DefaultHealthCheckTimeout {
		t.Errorf("no health_check: %+v %v", s.HealthCheck, s.HealthCheckTimeout)
	}
}

func TestHealthCheckErrors(t *testing.T) {
	tests := []struct{ name, src, want string }{
		{"no zone", "stream {\nupstream b { server 127.0.0.1:1; }\nserver { listen 80; proxy_pass b;\nhealth_check; } }",
			`"health_check" requires a "zone" in upstream "b" in t.conf:4`},
		{"upstream after server", "stream {\nserver { listen 80; proxy_pass b;\nhealth_check; }\nupstream b { server 127.0.0.1:1; } }",
			`"health_check" requires a "zone" in upstream "b" in t.conf:3`},
		{"literal address", srv("health_check;"), `"health_check" requires a "zone" in upstream "127.0.0.1:80" in t.conf:1`},
		{"unknown match", hcConf("", "health_check match=nope;"), `match "nope" not found in "health_check" directive in t.conf:6`},
		{"bad parameter", hcConf("", "health_check foo=1;"), `invalid parameter "foo=1" in "health_check" directive in t.conf:6`},
		{"zero fails", hcConf("", "health_check fails=0;"), `invalid parameter "fails=0" in "health_check" directive in t.conf:6`},
		{"bad interval", hcConf("", "health_check interval=fast;"), `invalid parameter "interval=fast" in "health_check" directive in t.conf:6`},
		{"zero interval", hcConf("", "health_check interval=0;"), `invalid parameter "interval=0" in "health_check" directive in t.conf:6`},
		{"bad port", hcConf("", "health_check port=70000;"), `invalid parameter "port=70000" in "health_check" directive in t.conf:6`},
		{"empty match", hcConf("", "health_check match=;"), `invalid parameter "match=" in "health_check" directive in t.conf:6`},
		{"udp", hcConf("", "health_check udp;"), `"udp" parameter of "health_check" is not supported: tlsrelay proxies TCP in t.conf:6`},
		{"persistent alone", hcConf("", "health_check persistent;"), `"persistent" requires "mandatory" in "health_check" directive in t.conf:6`},
		{"duplicate", hcConf("", "health_check;\nhealth_check;"), `"health_check" directive is duplicate in t.conf:7`},
		{"stream level", hcConf("health_check;", ""), `"health_check" directive is not allowed here in t.conf:2`},
		{"bad timeout", hcConf("", "health_check_timeout soon;"), `"health_check_timeout" directive invalid value in t.conf:6`},
		{"duplicate timeout", hcConf("health_check_timeout 1s;\nhealth_check_timeout 2s;", ""),
			`"health_check_timeout" directive is duplicate in t.conf:3`},
		{"duplicate match", "stream {\nmatch a { }\nmatch a { } }", `duplicate match "a" in t.conf:3`},
		{"match child", "stream {\nmatch a {\nsend x;\nreceive y; } }", `unknown directive "receive" in match block in t.conf:4`},
		{"match twice", "stream {\nmatch a {\nsend x;\nsend y; } }", `"send" directive is duplicate in t.conf:4`},
		{"match args", "stream {\nmatch a {\nexpect = x; } }", `invalid number of arguments in "expect" directive in t.conf:3`},
		{"match regex", "stream {\nmatch a {\nexpect ~ \"(\"; } }", `invalid regex "(" in "expect" directive: error parsing regexp: missing closing ): ` + "`(`" + ` in t.conf:3`},
		{"match in server", srv("match a { }"), `"match" directive is not allowed here in t.conf:1`},
		{"match no block", "stream { match a; }", `directive "match" has no opening "{" in t.conf:1`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, msg := parseIn(t, tc.src, LoadOptions{})
			if msg != "[emerg] "+tc.want {
				t.Errorf("got  %s\nwant %s", msg, tc.want)
			}
		})
	}
}

func TestDecodeHex(t *testing.T) {
	for in, want := range map[string]string{
		`abc`: "abc", `\x00\x7f`: "\x00\x7f", `a\x4Bz`: "aKz", `\xZZ`: `\xZZ`, `\x4`: `\x4`, `\x`: `\x`,
	} {
		if got := decodeHex(in); got != want {
			t.Errorf("decodeHex(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestHealthFormat: what formatMatches and the health_check rows write parses back
// to the same settings.
func TestHealthFormat(t *testing.T) {
	cfg, _, msg := parseIn(t, hcConf("health_check_timeout 2s;",
		"health_check interval=250ms jitter=1s fails=3 passes=2 port=8443 match=m mandatory;"), LoadOptions{})
	if msg != "" {
		t.Fatal(msg)
	}
	w := &confWriter{table: directiveTable(), depth: 1}
	formatMatches(w, &formatAt{cfg: cfg})
	matches := w.b.String()
	w = &confWriter{table: w.table, depth: 2}
	at := &formatAt{cfg: cfg, srv: cfg.Stream.Servers[0]}
	for _, r := range w.table {
		if r.name == "health_check" || r.name == "health_check_timeout" {
			r.format(w, at)
		}
	}
	src := "stream {\n" + matches + "\nupstream b { zone b 64k; server 127.0.0.1:1; }\n" +
		"server { listen 80; proxy_pass b;\n" + w.b.String() + "}\n}\n"
	again, _, msg := parseIn(t, src, LoadOptions{})
	if msg != "" {
		t.Fatalf("%s\n%s", msg, src)
	}
	s0, s1 := cfg.Stream.Servers[0], again.Stream.Servers[0]
	h0, h1 := *s0.HealthCheck, *s1.HealthCheck
	h0.Pos, h1.Pos = Pos{}, Pos{}
	if h0 != h1 || s0.HealthCheckTimeout != s1.HealthCheckTimeout {
		t.Fatalf("health_check %+v %v, after -T %+v %v\n%s", h0, s0.HealthCheckTimeout, h1, s1.HealthCheckTimeout, src)
	}
	m0, m1 := cfg.Stream.Matches["m"], again.Stream.Matches["m"]
	if m0.Send != m1.Send || m0.Expect != m1.Expect || m0.Regexp.String() != m1.Regexp.String() {
		t.Fatalf("match %+v, after -T %+v\n%s", m0, m1, src)
	}
	if got := decodeHex(encodeHex("a\x00\x7f\xff\r\n")); got != "a\x00\x7f\xff\r\n" {
		t.Fatalf("hex round trip %q", got)
	}
}
