package engine

import (
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// TestCompileFormat: a format compiled by conf becomes literal and
// variable segments; names are matched in lower case; what conf refuses
// never reaches the log.
func TestCompileFormat(t *testing.T) {
	for _, tc := range []struct {
		in   string
		segs []logSegment
		err  string // conf's error
	}{
		{in: "plain", segs: []logSegment{{lit: "plain"}}},
		{in: "$remote_addr", segs: []logSegment{{id: varRemoteAddr}}},
		{in: "a ${status}b", segs: []logSegment{{lit: "a "}, {id: varStatus}, {lit: "b"}}},
		{in: "$status$bytes_sent", segs: []logSegment{{id: varStatus}, {id: varBytesSent}}},
		{in: "${STATUS}", segs: []logSegment{{id: varStatus}}},
		{in: "$upstream_ssl_session_reused", segs: []logSegment{{id: varUpstreamSSLSessionReused}}},
		{in: "$proxy_protocol_tlv_0x01", segs: []logSegment{{id: varPPTLV, lit: "0x01"}}},
		{in: "$binary_remote_addr$1", segs: []logSegment{{id: varEmpty}, {id: varEmpty}}},
		{in: "cost $ 5", err: `invalid variable name in "cost $ 5"`},
		{in: "$nosuch x", err: `unknown "nosuch" variable`},
	} {
		tm, err := conf.CompileTemplate(tc.in)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("%q: %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tc.in, err)
		}
		got := compileFormat(tm, "", nil).segs
		if len(got) != len(tc.segs) {
			t.Fatalf("%q: %+v, want %+v", tc.in, got, tc.segs)
		}
		for i := range got {
			if got[i] != tc.segs[i] {
				t.Fatalf("%q: %+v, want %+v", tc.in, got, tc.segs)
			}
		}
	}
}

func TestEscape(t *testing.T) {
	for _, tc := range []struct {
		in   string
		mode escapeMode
		want string
	}{
		{`plain`, escapeDefault, `plain`},
		{`a"b\c`, escapeDefault, `a\x22b\x5Cc`},
		{"tab\there\xff", escapeDefault, `tab\x09here\xFF`},
		{`a"b\c`, escapeJSON, `a\"b\\c`},
		{"nl\n", escapeJSON, `nl\u000A`},
	} {
		b := []byte("pre:")
		b = append(b, tc.in...)
		got := string(escapeTail(b, 4, tc.mode))
		if got != "pre:"+tc.want {
			t.Errorf("%q mode %d: %q, want %q", tc.in, tc.mode, got, "pre:"+tc.want)
		}
	}
}

func FuzzCompileFormat(f *testing.F) {
	f.Add("$remote_addr [$time_local] $status ${bytes_sent}b")
	f.Add("${")
	f.Add("$$$")
	f.Fuzz(func(t *testing.T, s string) {
		tm, err := conf.CompileTemplate(s)
		if err != nil {
			return // refused at load
		}
		lf := compileFormat(tm, "json", nil)
		// Literal text survives compilation unchanged.
		var lits strings.Builder
		for _, sg := range lf.segs {
			if sg.id == varLiteral {
				lits.WriteString(sg.lit)
			}
		}
		if strings.Count(s, "$") == 0 && lits.String() != s {
			t.Fatalf("literal %q became %q", s, lits.String())
		}
	})
}

// TestAccessLog: one line per session with NGINX's variables and ours,
// including a failed session (502) and gzip-buffered output.
func TestAccessLog(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	dead := backend.RefusingAddr(t)
	logPath := filepath.Join(dir, "access.log")
	gzPath := filepath.Join(dir, "access.log.gz")
	text := "stream {\n" +
		`log_format main '$remote_addr $status $bytes_sent $bytes_received up="$upstream_addr" ` +
		`ct=$upstream_connect_time ub=$upstream_bytes_sent/$upstream_bytes_received ` +
		`tls=$upstream_ssl_protocol/$upstream_ssl_session_reused err=$upstream_ssl_error why="$close_reason" pid=$pid';` + "\n" +
		upstreamBlock("backend", ups) +
		"upstream deadgroup { server " + dead + "; }\n" +
		fmt.Sprintf(guideServer, "access_log "+logPath+" main; access_log "+gzPath+" main gzip buffer=1k;") +
		strings.Replace(fmt.Sprintf(guideServer, "access_log "+logPath+" main;"), "proxy_pass backend;", "proxy_pass deadgroup;", 1) +
		"}\n"
	tb := startEngine(t, dir, text)
	var second string
	for _, a := range tb.eng.Addrs() {
		if a.String() != tb.addr {
			second = a.String()
		}
	}
	for i := 0; i < 3; i++ {
		if _, err := echoOnce(tb.addr, []byte("hello"), 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	// A session ends (and logs) once its upstream has closed too: the
	// failed one's line comes after theirs.
	testutil.WaitFor(t, "three sessions ended", 10*time.Second, func() bool { return ended(tb) == 3 })
	c, err := net.Dial("tcp", second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.ReadAll(c)
	c.Close()
	testutil.WaitFor(t, "four access-log lines", 10*time.Second, func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Count(string(b), "\n") == 4
	})
	b, _ := os.ReadFile(logPath)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	ok := regexp.MustCompile(`^127\.0\.0\.1 200 5 5 up="127\.0\.0\.1:\d+" ct=0\.\d{3} ub=5/5 tls=TLSv1\.3/[.r] err= why="client closed" pid=` + strconv.Itoa(os.Getpid()) + `$`)
	resumed := 0
	for _, l := range lines[:3] {
		if !ok.MatchString(l) {
			t.Fatalf("line %q does not match %v", l, ok)
		}
		if strings.Contains(l, "/r ") {
			resumed++
		}
	}
	if resumed != 2 {
		t.Fatalf("%d lines show a resumed session, want 2:\n%s", resumed, b)
	}
	bad := regexp.MustCompile(`^127\.0\.0\.1 502 0 0 up="127\.0\.0\.1:\d+" ct=- ub=0/0 tls=/ err=\S+ why="upstream unreachable" pid=\d+$`)
	if !bad.MatchString(lines[3]) {
		t.Fatalf("failed session line %q does not match %v", lines[3], bad)
	}
	// Stop the engine so the gzip buffer is flushed, then read it back.
	tb.stop()
	<-tb.done
	tb.done <- nil
	f, err := os.Open(gzPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(plain), "\n"); n != 3 {
		t.Fatalf("gzip log has %d lines, want 3:\n%s", n, plain)
	}
}

// TestAccessLogVariablePath: an access_log path with variables is a file
// per value, opened for each line (NGINX without open_log_file_cache): two
// servers log to a file named by their port; a value that would leave the
// directory is refused and said in the error log.
func TestAccessLogVariablePath(t *testing.T) {
	up, sources := sourceRecorder(t)
	dir := t.TempDir()
	a, b := testutil.FreeAddr(t), testutil.FreeAddr(t)
	text := "stream {\nlog_format p '$remote_addr $status';\n" +
		"map $server_port $sub {\n    default ok;\n    " + portOnly(b) + " ../escape;\n}\n" +
		"server { listen " + a + "; proxy_pass " + up + "; access_log {{dir}}/port_$server_port.log p; }\n" +
		"server { listen " + b + "; proxy_pass " + up + "; access_log {{dir}}/$sub/x.log p; access_log {{dir}}/port_$server_port.log p; }\n}\n"
	tb := startEngine(t, dir, text)
	for i, addr := range []string{a, b, a} {
		h := holdSession(t, addr)
		h.c.Close()
		testutil.WaitFor(t, "the upstream's session", 10*time.Second, func() bool { return len(sources()) == i+1 })
	}
	if got := readLines(t, filepath.Join(dir, "port_"+portOnly(a)+".log"), 2); len(got) != 2 || !strings.HasSuffix(got[0], " 200") {
		t.Errorf("%s's log: %q", a, got)
	}
	if got := readLines(t, filepath.Join(dir, "port_"+portOnly(b)+".log"), 1); len(got) != 1 {
		t.Errorf("%s's log: %q", b, got)
	}
	testutil.WaitFor(t, "the refusal of ../escape", 10*time.Second, func() bool {
		return strings.Contains(tb.logText(), `access log path "`+dir+`/../escape/x.log" is not an absolute path without ".."`)
	})
}

// portOnly returns the port of "host:port".
func portOnly(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}
