package conf

import (
	"reflect"
	"strings"
	"testing"
)

// flat renders a tree as "name arg arg;" / "name {...}" for comparisons.
func flat(list []*directive) string {
	var parts []string
	for _, d := range list {
		s := strings.Join(append([]string{d.name}, d.args...), "|")
		if d.isBlock {
			s += "{" + flat(d.block) + "}"
		} else {
			s += ";"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

func TestLexer(t *testing.T) {
	tests := []struct {
		name, src, want string
	}{
		{"empty", "", ""},
		{"simple", "a b c;", "a|b|c;"},
		{"spaces", " \t\r\na\n  b\tc ; ", "a|b|c;"},
		{"no space before semicolon", "a b;c d;", "a|b; c|d;"},
		{"block", "s { a 1; b 2; }", "s{a|1; b|2;}"},
		{"nested", "a{b{c;}}", "a{b{c;}}"},
		{"block args", "upstream x {server y;}", "upstream|x{server|y;}"},
		{"comment", "# c\na b; # c;\n", "a|b;"},
		{"hash inside word", "a b#c;", "a|b#c;"},
		{"double quoted", `a "b c";`, "a|b c;"},
		{"single quoted", `a 'b c';`, "a|b c;"},
		{"quoted empty", `a "";`, "a|;"},
		{"escapes in quotes", `a "q\"x\'y\\z\tn\nr\r";`, "a|q\"x'y\\z\tn\nr\r;"},
		{"other escape kept", `a "\d";`, `a|\d;`},
		{"escaped semicolon", `a b\;c;`, `a|b\;c;`},
		{"escaped space", `a b\ c;`, `a|b\ c;`},
		{"variable", "a $x;", "a|$x;"},
		{"braced variable", "a ${x}y;", "a|${x}y;"},
		{"quote then semicolon", `a "b";`, "a|b;"},
		{"quote then brace", `a "b"{}`, "a|b{}"},
		{"brace in word", "a b}c;", "a|b}c;"},
		{"paren after quote", `a "b")c;`, "a|b|)c;"},
		{"semicolon right after name", "a;", "a;"},
		{"crlf", "a b;\r\nc d;\r\n", "a|b; c|d;"},
		{"utf8", "a é;", "a|é;"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tree, err := parseTree("t.conf", []byte(tt.src), false)
			if err != nil {
				t.Fatalf("parseTree(%q): %v", tt.src, err)
			}
			if got := flat(tree); got != tt.want {
				t.Errorf("parseTree(%q) = %q, want %q", tt.src, got, tt.want)
			}
		})
	}
}

func TestLexerErrors(t *testing.T) {
	tests := []struct {
		name, src, want string
		param           bool
	}{
		{"unexpected close", "a;\n}", `[emerg] unexpected "}" in t.conf:2`, false},
		{"close after args", "a b }", `[emerg] unexpected "}" in t.conf:1`, false},
		{"eof in directive", "a b", `[emerg] unexpected end of file, expecting ";" or "}" in t.conf:1`, false},
		{"eof in block", "s {\na;\n", `[emerg] unexpected end of file, expecting "}" in t.conf:3`, false},
		{"eof in quote", "a \"b;\n", `[emerg] unexpected end of file, expecting ";" or "}" in t.conf:2`, false},
		{"lone semicolon", ";", `[emerg] unexpected ";" in t.conf:1`, false},
		{"lone brace", "{", `[emerg] unexpected "{" in t.conf:1`, false},
		{"char after quote", `a "b"c;`, `[emerg] unexpected "c" in t.conf:1`, false},
		{"eof after name", "a", `[emerg] unexpected end of file, expecting ";" or "}" in t.conf:1`, false},
		{"too long", "a " + strings.Repeat("x", 5000) + ";",
			`[emerg] too long parameter "xxxxxxxxxx..." started in t.conf:1`, false},
		{"too long quoted", "a \"" + strings.Repeat("x", 5000) + "\";",
			`[emerg] too long parameter, probably missing terminating '"' character in t.conf:1`, false},
		{"param eof", "pid x", `[emerg] unexpected end of parameter, expecting ";" in command line`, true},
		{"param block", "events {}", `[emerg] block directives are not supported in -g option in command line`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseTree("t.conf", []byte(tt.src), tt.param)
			if err == nil || err.Error() != tt.want {
				t.Errorf("parseTree(%q) error = %v, want %s", tt.src, err, tt.want)
			}
		})
	}
}

func TestLexerPositions(t *testing.T) {
	src := "a 1;\n\nb\n  2;\nc {\n  d;\n}\n"
	tree, err := parseTree("f", []byte(src), false)
	if err != nil {
		t.Fatal(err)
	}
	var got []Pos
	for _, d := range tree {
		got = append(got, d.pos)
	}
	got = append(got, tree[2].block[0].pos, tree[2].end)
	want := []Pos{{"f", 1}, {"f", 4}, {"f", 5}, {"f", 6}, {"f", 7}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("positions = %v, want %v", got, want)
	}
}

func TestUnits(t *testing.T) {
	sizes := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true}, {"16k", 16384, true}, {"16K", 16384, true}, {"1m", 1 << 20, true}, {"2M", 2 << 20, true},
		{"1g", 0, false}, {"", 0, false}, {"k", 0, false}, {"-1", 0, false}, {"1.5k", 0, false}, {"16kb", 0, false},
		{"99999999999999999999", 0, false},
	}
	for _, s := range sizes {
		got, ok := ParseSize(s.in)
		if got != s.want || ok != s.ok {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, %v", s.in, got, ok, s.want, s.ok)
		}
	}
	if n, ok := ParseOffset("2g"); !ok || n != 2<<30 {
		t.Errorf("ParseOffset(2g) = %d, %v", n, ok)
	}
	times := []struct {
		in   string
		sec  bool
		want string
		ok   bool
	}{
		{"0", false, "0s", true}, {"60s", false, "1m0s", true}, {"10m", false, "10m0s", true},
		{"500ms", false, "500ms", true}, {"1m30s", false, "1m30s", true}, {"1m30", false, "1m30s", true},
		{"1h 30m", false, "1h30m0s", true}, {"1d", false, "24h0m0s", true}, {"1w", false, "168h0m0s", true},
		{"5", false, "5s", true}, {"1M", false, "", false}, {"1y", false, "", false}, {"1s1m", false, "", false},
		{"1x", false, "", false}, {"", false, "", false}, {"s", false, "", false}, {"1ms1s", false, "", false},
		{"10s", true, "10s", true}, {"1M", true, "720h0m0s", true}, {"1y", true, "8760h0m0s", true},
		{"10ms", true, "", false}, {"1 s", false, "", false}, {"-1s", false, "", false},
		{"99999999999999999999", false, "", false},
	}
	for _, tt := range times {
		got, ok := ParseDuration(tt.in, tt.sec)
		if ok != tt.ok || (ok && got.String() != tt.want) {
			t.Errorf("ParseDuration(%q, %v) = %v, %v; want %s, %v", tt.in, tt.sec, got, ok, tt.want, tt.ok)
		}
	}
}
