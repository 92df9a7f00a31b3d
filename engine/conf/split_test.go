package conf

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestSplitClientsParse: split_clients as NGINX reads it (shares in
// hundredths of a percent, bounds scaled to 0xffffffff, "*"), its
// variable usable above its block, and NGINX's errors with file:line.
func TestSplitClientsParse(t *testing.T) {
	srv := func(extra string) string {
		return "server { listen 80; proxy_pass 127.0.0.1:1; " + extra + " }\n"
	}
	for _, tc := range []struct{ name, src, err string }{
		{"used above its block", "stream { " + srv("proxy_bind $v;") + " split_clients $remote_addr $v { 50% 127.0.0.2; * 127.0.0.3; } }", ""},
		{"in a hash key", "stream { upstream u { hash $V$remote_port; server 127.0.0.1:1; } split_clients \"${remote_addr}x\" $v { * a; } }", ""},
		{"in a log format", "stream { log_format f '$v $status'; split_clients $server_port $v { 1% a; } }", ""},
		{"percent with three decimals", "stream { split_clients $remote_addr $v { 0.125% a; } }", `invalid percent value "0.125%" in t.conf:1`},
		{"percent without %", "stream { split_clients $remote_addr $v { 50 a; } }", `invalid percent value "50" in t.conf:1`},
		{"zero percent", "stream { split_clients $remote_addr $v { 0% a; } }", `invalid percent value "0%" in t.conf:1`},
		{"over 100%", "stream {\nsplit_clients $remote_addr $v {\n60% a;\n40.01% b;\n}\n}", `percent total is greater than 100% in t.conf:5`},
		{"line after *", "stream { split_clients $remote_addr $v { * a; 1% b; } }", `percent total is greater than 100% in t.conf:1`},
		{"not a variable", "stream { split_clients $remote_addr v { * a; } }", `invalid variable name "v" in t.conf:1`},
		{"NGINX's variable", "stream { split_clients $remote_addr $Remote_Port { * a; } }", `the duplicate "remote_port" variable in t.conf:1`},
		{"twice", "stream { split_clients $remote_addr $v { * a; } split_clients $remote_port $v { * b; } }", `the duplicate "v" variable in t.conf:1`},
		{"key with a late variable", "stream { split_clients $status $v { * a; } }", `the "status" variable cannot be used in "split_clients"`},
		{"key with a split variable", "stream { split_clients $w $v { * a; } split_clients $remote_addr $w { * b; } }", `the "w" variable cannot be used in "split_clients"`},
		{"not in limit_conn_zone", "stream { limit_conn_zone $v zone=z:1m; split_clients $remote_addr $v { * a; } }", `the "v" variable cannot be used in "limit_conn_zone"`},
		{"unknown without a block", "stream { " + srv("proxy_bind $v;") + " }", `unknown "v" variable in t.conf:1`},
		{"two values", "stream { split_clients $remote_addr $v { 10% a b; } }", `invalid number of arguments in split_clients in t.conf:1`},
		{"main context", "split_clients $remote_addr $v { * a; }", `"split_clients" directive is not allowed here in t.conf:1`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			_, _, err := Parse(filepath.Join(dir, "t.conf"), []byte(tc.src), LoadOptions{})
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(strings.ReplaceAll(err.Error(), dir+"/", ""), tc.err)):
				t.Fatalf("error %v, want %q", err, tc.err)
			}
		})
	}
	cfg, _, err := Parse(filepath.Join(t.TempDir(), "t.conf"),
		[]byte("stream { split_clients \"${remote_addr}AAA\" $v { 0.5% .one; 2.0% .two; * \"\"; } }"), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sc := cfg.Stream.SplitClients[0]
	// NGINX's documentation: 0.5% is hashes 0..21474835, 2% more up to
	// 107374180, "*" the rest.
	if sc.Var != "v" || sc.Parts[0].Percent != 50 || sc.Parts[0].Bound != 21474836 || sc.Parts[1].Bound != 107374181 || sc.Parts[2].Bound != 0 {
		t.Fatalf("parsed %+v", sc.Parts)
	}
	for _, tc := range []struct {
		hash uint32
		want string
	}{{0, ".one"}, {21474835, ".one"}, {21474836, ".two"}, {107374180, ".two"}, {107374181, ""}, {0xffffffff, ""}} {
		if got := sc.Pick(tc.hash); got != tc.want {
			t.Errorf("Pick(%d) = %q, want %q", tc.hash, got, tc.want)
		}
	}
	noStar := &SplitClients{Parts: []SplitPart{{Percent: 5000, Value: "a", Bound: 2147483647}}}
	if got := noStar.Pick(0x7fffffff); got != "" {
		t.Errorf("a hash above every bound gives %q, want \"\"", got)
	}
}
