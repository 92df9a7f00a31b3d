package main

import (
	"io"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// TestDemoProxies runs the demo on a known free port: it drives its own
// connections and reports full and resumed handshakes; then the test talks
// through it and checks that it stops by itself at its time limit.
func TestDemoProxies(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	var out testutil.Buffer
	done := make(chan error, 1)
	go func() { done <- demo(&out, port, 4*time.Second, "") }()
	// The demo's own connections first: the line that reports them.
	testutil.WaitFor(t, "the demo's report of its connections", 20*time.Second, func() bool {
		return strings.Contains(out.String(), "connections, one after another")
	})
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("connecting to the demo: %v", err)
	}
	c.SetDeadline(time.Now().Add(3 * time.Second))
	c.Write([]byte("ping\n"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping\n" {
		t.Fatalf("echo %q, %v", buf, err)
	}
	c.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("demo did not stop at its limit")
	}
	text := out.String()
	checkDemoCounts(t, text)
	want := "bash -c 'exec 3<>/dev/tcp/127.0.0.1/" + strconv.Itoa(port) + "; echo hello >&3; read -r l <&3; echo \"$l\"'"
	if !strings.Contains(text, want) {
		t.Errorf("demo output lacks %q:\n%s", want, text)
	}
	if regexp.MustCompile(`(^|[|;]|\s)nc (-|127)`).MatchString(text) {
		t.Errorf("demo still suggests nc:\n%s", text)
	}
}

// checkDemoCounts checks the line reporting the demo's own connections:
// each of them made one upstream handshake, and with three upstreams and
// session reuse at most three of the ten were full.
func checkDemoCounts(t *testing.T, text string) {
	t.Helper()
	m := regexp.MustCompile(`(\d+) connections, one after another, each echoed its line: upstream handshakes full (\d+), resumed (\d+)`).
		FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no full/resumed line in the demo's output:\n%s", text)
	}
	n, _ := strconv.Atoi(m[1])
	full, _ := strconv.Atoi(m[2])
	resumed, _ := strconv.Atoi(m[3])
	if n != demoConnections || full+resumed != n || full > 3 {
		t.Errorf("%d connections: full %d, resumed %d; want %d in all, at most 3 full", n, full, resumed, demoConnections)
	}
}

// TestDemoKeep runs the demo with -keep: the directory keeps a
// configuration that `tlsrelay -t` accepts.
func TestDemoKeep(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	var out testutil.Buffer
	if err := demo(&out, 0, 500*time.Millisecond, dir); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "tlsrelay.conf")
	if !strings.Contains(out.String(), "tlsrelay -t -c "+path) {
		t.Errorf("demo -keep does not say how to check %s:\n%s", path, out.String())
	}
	checkDemoCounts(t, out.String())
	code, _, stderr := runCmd("-t", "-c", path)
	if code != 0 || !strings.Contains(stderr, "test is successful") {
		t.Errorf("tlsrelay -t -c %s: exit %d\n%s", path, code, stderr)
	}
}
