package conf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMapFind: NGINX's lookup order (exact, case aside; the longest
// "*.x"/".x" wildcard; the longest "x.*"; the first regular expression,
// with its groups; the default), a hostnames map ignoring a trailing dot,
// and wildcard keys being plain strings without hostnames.
func TestMapFind(t *testing.T) {
	src := `stream {
map $remote_addr $h {
    hostnames;
    default            dflt;
    Example.COM        exact;
    *.example.com      head-short;
    *.www.example.com  head-long;
    .example.org       dot;
    www.example.*      tail-short;
    www.example.co.*   tail-long;
    ~^10\.(\d+)\.      re-$1;
    ~*^ABC             re-ci;
    ~^10\.1\.          never;
    \default           literal-default;
}
map $remote_addr $p {
    *.example.com      star;
    ~^a                re;
}
}`
	cfg, _, err := Parse(filepath.Join(t.TempDir(), "t.conf"), []byte(src), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h, p := cfg.Stream.Maps[0], cfg.Stream.Maps[1]
	for _, tc := range []struct {
		m        *Map
		in, want string
		caps     int
	}{
		{h, "example.com", "exact", 0},
		{h, "EXAMPLE.com.", "exact", 0},
		{h, "a.example.com", "head-short", 0},
		{h, "a.www.example.com", "head-long", 0},
		{h, "example.org", "dot", 0},
		{h, "x.y.example.org", "dot", 0},
		{h, "www.example.net", "tail-short", 0},
		{h, "www.example.co.uk", "tail-long", 0},
		{h, "10.1.2.3", "re-$1", 2},
		{h, "abcd", "re-ci", 1},
		{h, "default", "literal-default", 0},
		{h, "nothing", "dflt", 0},
		{p, "*.example.com", "star", 0},
		{p, "x.example.com", "", 0},
		{p, "abc", "re", 1},
	} {
		v, caps := tc.m.Find(tc.in)
		got := ""
		if v != nil {
			got = v.Text
		}
		if got != tc.want || len(caps) != tc.caps {
			t.Errorf("map $%s: %q -> %q with %d groups, want %q with %d", tc.m.Var, tc.in, got, len(caps), tc.want, tc.caps)
		}
	}
	if _, caps := h.Find("10.42.0.1"); len(caps) != 2 || caps[1] != "42" {
		t.Errorf("groups %q, want [10.42. 42]", caps)
	}
}

// TestMapRefused: what tlsrelay cannot evaluate is refused with the
// line's position, and a name defined twice is NGINX's duplicate.
func TestMapRefused(t *testing.T) {
	for _, tc := range []struct{ name, src, err string }{
		{"map in a map key", "stream {\nmap $m $n { default a; }\nmap $remote_addr $m { default b; }\n}", `the "m" variable cannot be used in "map"`},
		{"map in a map value", "stream {\nmap $remote_addr $n { default $m; }\nmap $remote_addr $m { default b; }\n}", `the "m" variable cannot be used in "default"`},
		{"late variable in a key", "stream {\nmap $status $n { default a; }\n}", `the "status" variable cannot be used in "map"`},
		{"include", "stream {\nmap $remote_addr $n {\ninclude m.conf;\n}\n}", `"include" in a map block is not supported in`},
		{"limit_conn_zone", "stream {\nlimit_conn_zone $n zone=z:1m;\nmap $remote_addr $n { default a; }\n}", `the "n" variable cannot be used in "limit_conn_zone"`},
		{"split and map share a name", "stream {\nsplit_clients $remote_addr $n { * a; }\nmap $remote_addr $n { default a; }\n}", `the duplicate "n" variable`},
		{"twice", "stream {\nmap $remote_addr $n { default a; }\nmap $remote_port $n { default a; }\n}", `the duplicate "n" variable`},
		{"bad regex", "stream {\nmap $remote_addr $n {\n~(a b;\n}\n}", `invalid regular expression "~(a"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Parse(filepath.Join(t.TempDir(), "t.conf"), []byte(tc.src), LoadOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "t.conf:") {
				t.Fatalf("error %v, want %q with a position", err, tc.err)
			}
		})
	}
}

// TestStreamVarsInInclude: a map or split_clients block in a file included
// under stream defines its variable for what follows the include (the
// scan for variables used above their block sees only the stream block's
// own lines), and a second definition is still NGINX's duplicate.
func TestStreamVarsInInclude(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "vars.conf"), []byte("map $remote_addr $m { default 127.0.0.2; }\nsplit_clients $remote_addr $s { * 127.0.0.3; }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	src := "stream {\ninclude vars.conf;\nserver { listen 80; proxy_pass 127.0.0.1:1; proxy_bind $m; }\nserver { listen 81; proxy_pass 127.0.0.1:1; proxy_bind $s; }\n}\n"
	cfg, _, err := Parse(filepath.Join(dir, "t.conf"), []byte(src), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Stream.Maps) != 1 || len(cfg.Stream.SplitClients) != 1 {
		t.Fatalf("%d maps, %d split_clients", len(cfg.Stream.Maps), len(cfg.Stream.SplitClients))
	}
	_, _, err = Parse(filepath.Join(dir, "t.conf"), []byte("stream {\ninclude vars.conf;\nmap $remote_port $m { default x; }\n}\n"), LoadOptions{})
	if err == nil || !strings.Contains(err.Error(), `the duplicate "m" variable`) {
		t.Fatalf("a second $m: %v", err)
	}
}
