package conf

import (
	"reflect"
	"strings"
	"testing"
)

// TestCompileTemplate: NGINX's rules for $name and ${name}, names looked up
// in lower case, $1..$9, and its error messages.
func TestCompileTemplate(t *testing.T) {
	lit := func(s string) TemplatePart { return TemplatePart{Lit: s} }
	v := func(s string) TemplatePart { return TemplatePart{Var: s} }
	for _, tc := range []struct {
		in    string
		parts []TemplatePart
		err   string
	}{
		{in: "plain", parts: nil},
		{in: "", parts: nil},
		{in: "$remote_addr", parts: []TemplatePart{v("remote_addr")}},
		{in: "${remote_addr}", parts: []TemplatePart{v("remote_addr")}},
		{in: "${Remote_Addr}x", parts: []TemplatePart{v("remote_addr"), lit("x")}},
		{in: "a$remote_addr:$remote_port.b", parts: []TemplatePart{lit("a"), v("remote_addr"), lit(":"), v("remote_port"), lit(".b")}},
		{in: "$binary_remote_addr", parts: []TemplatePart{v("binary_remote_addr")}},
		{in: "${remote_addr}${server_port}", parts: []TemplatePart{v("remote_addr"), v("server_port")}},
		{in: "$1-$9", parts: []TemplatePart{v("1"), lit("-"), v("9")}},
		{in: "$proxy_protocol_tlv_0x01", parts: []TemplatePart{v("proxy_protocol_tlv_0x01")}},
		{in: "$remote_address", err: `unknown "remote_address" variable`},
		{in: "$remote_addrx", err: `unknown "remote_addrx" variable`},
		{in: "x$", err: `invalid variable name in "x$"`},
		{in: "$-", err: `invalid variable name in "$-"`},
		{in: "${}", err: `invalid variable name in "${}"`},
		{in: "${remote_addr", err: `the closing bracket in "remote_addr" variable is missing`},
		{in: "${remote addr}", err: `the closing bracket in "remote" variable is missing`},
		{in: "$foo", err: `unknown "foo" variable`},
	} {
		got, err := CompileTemplate(tc.in)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("%q: error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if got.Text != tc.in || !reflect.DeepEqual(got.Parts, tc.parts) {
			t.Errorf("%q: %+v, want parts %+v", tc.in, got, tc.parts)
		}
	}
}

// TestKeyDirectives: hash and limit_conn_zone take the key variables,
// and proxy_ssl_name its own, in either form, and refuse, with the file
// and line, what is unknown or cannot be evaluated where they are.
func TestKeyDirectives(t *testing.T) {
	up := func(key string) string {
		return "stream { upstream b { hash " + key + "; server 127.0.0.1:1; } server { listen 80; proxy_pass b; } }"
	}
	zone := func(key string) string {
		return "stream { limit_conn_zone " + key + " zone=z:1m; server { listen 80; proxy_pass 127.0.0.1:1; limit_conn z 1; } }"
	}
	for _, tc := range []struct{ name, src, want string }{
		{"hash binary", up("$binary_remote_addr consistent"), ""},
		{"hash braced", up("${remote_addr}"), ""},
		{"hash mixed", up("x${remote_addr}-$server_port"), ""},
		{"hash unknown", up("$foo"), `unknown "foo" variable in t.conf:1`},
		{"hash not a key variable", up("$connection"), `the "connection" variable cannot be used in "hash": it may hold ` + keyVariablesText + ` in t.conf:1`},
		{"zone binary", zone("$binary_remote_addr"), ""},
		{"zone braced", zone("${remote_addr}"), ""},
		{"zone unknown", zone("$foo"), `unknown "foo" variable in t.conf:1`},
		{"zone not a key variable", zone("$upstream_addr"), `the "upstream_addr" variable cannot be used in "limit_conn_zone": it may hold ` + keyVariablesText + ` in t.conf:1`},
		{"name braced", srv("proxy_ssl_name ${server_addr}.example;"), ""},
		{"name not a name variable", srv("proxy_ssl_name $remote_port;"), `the "remote_port" variable cannot be used in "proxy_ssl_name": it may hold ` + NameVariablesText + ` in t.conf:1`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, msg := parseIn(t, tc.src, LoadOptions{})
			if tc.want == "" && msg != "" || tc.want != "" && !strings.HasSuffix(msg, tc.want) {
				t.Errorf("got %q, want %q", msg, tc.want)
			}
		})
	}
}

// FuzzCompileTemplate: any value compiles or fails with an NGINX-worded
// error, never panics, and a compiled template puts its parts back
// together into a value that compiles to the same parts.
func FuzzCompileTemplate(f *testing.F) {
	for _, s := range []string{"", "x", "$remote_addr", "${remote_addr}x", "a$1b", "$", "${", "${remote_addr", "$$$", "${REMOTE_ADDR}$server_port"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		tm, err := CompileTemplate(in)
		if err != nil {
			m := err.Error()
			if !strings.HasPrefix(m, "unknown ") && !strings.HasPrefix(m, "invalid variable name") && !strings.HasPrefix(m, "the closing bracket") {
				t.Fatalf("%q: unexpected error %q", in, m)
			}
			return
		}
		if tm.Text != in {
			t.Fatalf("%q: text %q", in, tm.Text)
		}
		var b strings.Builder
		for _, p := range tm.Parts {
			if len(p.Var) == 1 { // a capture, $1..$9
				b.WriteString("$" + p.Var)
			} else if p.Var != "" {
				b.WriteString("${" + p.Var + "}")
			} else {
				b.WriteString(strings.ReplaceAll(p.Lit, "$", "")) // a literal holds no "$"
				if strings.Contains(p.Lit, "$") {
					t.Fatalf("%q: literal part %q holds a $", in, p.Lit)
				}
			}
		}
		if !tm.HasVars() {
			return
		}
		again, err := CompileTemplate(b.String())
		if err != nil || !reflect.DeepEqual(again.Parts, tm.Parts) {
			t.Fatalf("%q: rebuilt %q compiles to %+v, %v; want %+v", in, b.String(), again, err, tm.Parts)
		}
	})
}
