package engine

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/engine/errlog"
	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// TestSecondInstanceRefused: a second engine on an address the first
// holds does not start silently beside it (each address is bound once,
// without SO_REUSEPORT unless reuseport asks for it): Serve fails with
// NGINX's bind() message and the directive's file:line.
func TestSecondInstanceRefused(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	tb := startEngine(t, dir, guideConf(ups, ""))
	text := strings.Replace(guideConf(ups, ""), "127.0.0.1:0;", tb.addr+";", 1)
	text = strings.ReplaceAll(text, "{{dir}}", dir)
	path := filepath.Join(t.TempDir(), "second.conf")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := conf.Load(path, conf.LoadOptions{Prefix: dir})
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(cfg, Options{Log: errlog.New(&testutil.Buffer{}, errlog.LevelInfo)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = e.Serve(ctx)
	want := fmt.Sprintf("bind() to %s failed (98: Address already in use) in %s:", tb.addr, path)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("second instance: %v, want %q", err, want)
	}
	// The first still serves every connection.
	for i := 0; i < 10; i++ {
		if _, err := echoOnce(tb.addr, []byte("first"), 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
}

// TestListenBacklog: the listen() backlog is backlog= (NGINX's default
// 511), as ss shows it (Send-Q of a listening socket).
func TestListenBacklog(t *testing.T) {
	ss := testutil.NeedProgram(t, "ss", "iproute2")
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	text := "worker_processes 2;\nstream {\n" + upstreamBlock("backend", ups) + fmt.Sprintf(guideServer, "") +
		strings.Replace(fmt.Sprintf(guideServer, ""), "127.0.0.1:0;", "127.0.0.1:50 backlog=100;", 1) + "}\n"
	tb := startEngine(t, dir, text)
	addrs := tb.eng.Addrs()
	if len(addrs) != 2 {
		t.Fatalf("listeners %v", addrs)
	}
	for i, want := range []string{"511", "100"} {
		port := addrs[i].(*net.TCPAddr).Port
		out, err := exec.Command(ss, "-Hltn", fmt.Sprintf("sport = :%d", port)).Output()
		if err != nil {
			t.Fatalf("ss: %v", err)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) != 1 {
			t.Fatalf("ss shows %d sockets on port %d, want 1 (no SO_REUSEPORT copies):\n%s", len(lines), port, out)
		}
		f := strings.Fields(lines[0])
		if len(f) < 3 || f[2] != want {
			t.Errorf("listener %d: ss says %q, want backlog %s", i, lines[0], want)
		}
	}
}

// TestWorkerConnections: worker_connections bounds each loop as NGINX
// counts: the listening socket takes one, each session two. With one loop
// and 16, seven sessions are held; the eighth client is closed at once and
// the log says why.
func TestWorkerConnections(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	text := strings.NewReplacer("worker_processes 2;", "worker_processes 1;", "worker_connections 20000;", "worker_connections 16;").Replace(guideConf(ups, ""))
	tb := startEngine(t, dir, text)
	for i := 0; i < 7; i++ {
		holdSession(t, tb.addr)
	}
	c, err := net.DialTimeout("tcp", tb.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("x"))
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("the eighth session got %d bytes back, want it closed", n)
	}
	if !strings.Contains(tb.logText(), "16 worker_connections are not enough") {
		t.Errorf("the log does not say why:\n%s", tb.logText())
	}
	if n := int64(tb.eng.Metrics().Snapshot().Refused); n != 1 {
		t.Errorf("Refused = %d, want 1", n)
	}
}
