package conf

import (
	"net/netip"
	"strings"
	"testing"
)

// TestAccessRules: allow and deny keep their order within a level; a
// server with none inherits the stream level's, one with any replaces
// them (NGINX's access module); -T prints them back.
func TestAccessRules(t *testing.T) {
	src := `stream {
    deny 10.0.0.1;
    allow 10.0.0.0/8;
    deny all;
    server { listen 80; proxy_pass 127.0.0.1:1; }
    server { listen 81; proxy_pass 127.0.0.1:1; allow ::1; allow 192.168.1.7/16; deny unix:; }
}`
	cfg, _, msg := parseIn(t, src, LoadOptions{})
	if msg != "" {
		t.Fatal(msg)
	}
	type rule struct {
		deny, all, unix bool
		pfx             string
	}
	flat := func(rs []AccessRule) []rule {
		var out []rule
		for _, r := range rs {
			p := ""
			if r.Prefix.IsValid() {
				p = r.Prefix.String()
			}
			out = append(out, rule{r.Deny, r.All, r.Unix, p})
		}
		return out
	}
	for i, want := range [][]rule{
		{{true, false, false, "10.0.0.1/32"}, {false, false, false, "10.0.0.0/8"}, {true, true, false, ""}},
		{{false, false, false, "::1/128"}, {false, false, false, "192.168.0.0/16"}, {true, false, true, ""}},
	} {
		got := flat(cfg.Stream.Servers[i].Access)
		if len(got) != len(want) {
			t.Fatalf("server %d: rules %+v, want %+v", i, got, want)
		}
		for j := range want {
			if got[j] != want[j] {
				t.Errorf("server %d rule %d: %+v, want %+v", i, j, got[j], want[j])
			}
		}
	}
	if p := cfg.Stream.Servers[0].Access[1].Pos; p.Line != 3 {
		t.Errorf("rule position %v, want line 3", p)
	}
	out := cfg.Format()
	for _, want := range []string{"deny 10.0.0.1;", "allow 10.0.0.0/8;", "deny all;", "allow ::1;", "allow 192.168.0.0/16;", "deny unix:;"} {
		if !strings.Contains(out, want) {
			t.Errorf("-T lacks %q:\n%s", want, out)
		}
	}
	cfg2, _, msg := parseIn(t, out, LoadOptions{})
	if msg != "" {
		t.Fatalf("re-parsing -T output: %s", msg)
	}
	if cfg2.Format() != out {
		t.Error("-T output does not parse back to itself")
	}
	if a := cfg.Stream.Servers[0].Access[0].Prefix.Addr(); a != netip.MustParseAddr("10.0.0.1") {
		t.Errorf("address %v", a)
	}
}

func TestAccessRuleErrors(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{srv("allow 10.0.0.300;"), `invalid parameter "10.0.0.300" in t.conf:1`},
		{srv("deny 10.0.0.0/33;"), `invalid parameter "10.0.0.0/33" in t.conf:1`},
		{srv("allow everyone;"), `invalid parameter "everyone" in t.conf:1`},
		{srv("deny;"), `invalid number of arguments in "deny" directive in t.conf:1`},
		{srv("allow a b;"), `invalid number of arguments in "allow" directive in t.conf:1`},
		{"allow all;", `"allow" directive is not allowed here in t.conf:1`},
	} {
		_, _, msg := parseIn(t, tc.src, LoadOptions{})
		if !strings.Contains(msg, tc.want) {
			t.Errorf("%s: error %q, want %q", tc.src, msg, tc.want)
		}
	}
}

func TestLimitConn(t *testing.T) {
	src := `stream {
    limit_conn_zone $binary_remote_addr zone=addr:10m;
    limit_conn_zone $server_addr zone=srv:1m;
    limit_conn addr 2;
    limit_conn_status 429;
    server { listen 80; proxy_pass 127.0.0.1:1; }
    server { listen 81; proxy_pass 127.0.0.1:1; limit_conn srv 5; limit_conn addr 1; limit_conn_log_level warn; limit_conn_dry_run on; }
}`
	cfg, _, msg := parseIn(t, src, LoadOptions{})
	if msg != "" {
		t.Fatal(msg)
	}
	st := cfg.Stream
	if z := st.LimitConnZones["addr"]; z == nil || z.Key != "$binary_remote_addr" || z.Size != 10<<20 {
		t.Fatalf("zone addr %+v", z)
	}
	s0, s1 := st.Servers[0], st.Servers[1]
	if len(s0.LimitConn) != 1 || s0.LimitConn[0] != (LimitConn{Pos: s0.LimitConn[0].Pos, Zone: "addr", Number: 2}) {
		t.Errorf("server 0 inherits %+v", s0.LimitConn)
	}
	if len(s1.LimitConn) != 2 || s1.LimitConn[0].Zone != "srv" || s1.LimitConn[1].Number != 1 {
		t.Errorf("server 1 has %+v", s1.LimitConn)
	}
	if s0.Core.LimitConnStatus != 429 || s0.Core.LimitConnLogLevel != "error" || s1.Core.LimitConnLogLevel != "warn" || !s1.Core.LimitConnDryRun {
		t.Errorf("core %+v / %+v", s0.Core, s1.Core)
	}
	out := cfg.Format()
	for _, want := range []string{"limit_conn_zone $binary_remote_addr zone=addr:10m;", "limit_conn srv 5;", "limit_conn_status 429;", "limit_conn_dry_run on;"} {
		if !strings.Contains(out, want) {
			t.Errorf("-T lacks %q:\n%s", want, out)
		}
	}
	cfg2, _, msg := parseIn(t, out, LoadOptions{})
	if msg != "" || cfg2.Format() != out {
		t.Errorf("-T output does not parse back to itself: %s", msg)
	}
	for _, tc := range []struct{ src, want string }{
		{"stream { limit_conn_zone $remote_addr addr:10m; }", `invalid parameter "addr:10m"`},
		{"stream { limit_conn_zone $remote_addr zone=addr; }", `invalid zone size "zone=addr"`},
		{"stream { limit_conn_zone $remote_addr zone=addr:1k; }", `zone "zone=addr:1k" is too small`},
		{"stream { limit_conn_zone $remote_addr zone=a:1m; limit_conn_zone $server_addr zone=a:1m; }", `zone "a" is already bound to key "$remote_addr"`},
		{srv("limit_conn nope 1;"), `unknown limit_conn_zone "nope"`},
		{"stream { limit_conn_zone $remote_addr zone=a:1m; " + srv("limit_conn a 0;")[len("stream { "):], `invalid number of connections "0"`},
		{srv("limit_conn_status 302;"), `value must be between 400 and 599`},
		{srv("limit_conn_log_level debug;"), `invalid value "debug" in "limit_conn_log_level" directive`},
	} {
		_, _, msg := parseIn(t, tc.src, LoadOptions{})
		if !strings.Contains(msg, tc.want) {
			t.Errorf("%s: error %q, want %q", tc.src, msg, tc.want)
		}
	}
}
