package engine

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// reload writes text as the configuration (as startEngine does) and
// reloads the engine with it.
func (tb *testbed) reload(text string) error {
	tb.t.Helper()
	text = strings.ReplaceAll(text, "{{dir}}", tb.dir)
	for n := 1; strings.Contains(text, "127.0.0.1:0;"); n++ {
		text = strings.Replace(text, "127.0.0.1:0;", fmt.Sprintf("127.0.0.1:%d;", n), 1)
	}
	path := filepath.Join(tb.dir, "tlsrelay.conf")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		tb.t.Fatal(err)
	}
	cfg, _, err := conf.Load(path, conf.LoadOptions{Prefix: tb.dir})
	if err != nil {
		return err
	}
	return tb.eng.Reload(cfg)
}

// heldSession is a client connection held open through the proxy.
type heldSession struct {
	c net.Conn
}

func holdSession(t *testing.T, addr string) *heldSession {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	h := &heldSession{c: c}
	if err := h.echo(64); err != nil {
		t.Fatalf("held session, first echo: %v", err)
	}
	return h
}

// echo sends n random bytes and checks that the same bytes come back,
// by SHA-256.
func (h *heldSession) echo(n int) error {
	p := make([]byte, n)
	rand.Read(p)
	h.c.SetDeadline(time.Now().Add(20 * time.Second))
	errc := make(chan error, 1)
	go func() { _, err := h.c.Write(p); errc <- err }()
	got := make([]byte, n)
	if _, err := io.ReadFull(h.c, got); err != nil {
		return fmt.Errorf("reading the echo: %w", err)
	}
	if err := <-errc; err != nil {
		return fmt.Errorf("writing: %w", err)
	}
	if sha256.Sum256(got) != sha256.Sum256(p) {
		return fmt.Errorf("echo of %d bytes differs", n)
	}
	return nil
}

// TestReloadSwitchesUpstreams: after a reload new sessions reach the new
// configuration's upstream, a session held from before still relays
// through the old one, and the listener never stopped accepting.
func TestReloadSwitchesUpstreams(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	a := startUpstreams(t, set, 1, backend.Echo, nil)
	b := startUpstreams(t, set, 1, backend.Echo, nil)
	tb := startEngine(t, dir, guideConf(a, ""))
	held := holdSession(t, tb.addr)
	if err := tb.reload(guideConf(b, "")); err != nil {
		t.Fatalf("reload: %v", err)
	}
	before := a[0].Stats().Accepted
	for i := 0; i < 5; i++ {
		if _, err := echoOnce(tb.addr, []byte("after reload"), 10*time.Second); err != nil {
			t.Fatalf("connect after reload: %v", err)
		}
	}
	if got := b[0].Stats().Accepted; got != 5 {
		t.Errorf("new upstream accepted %d connections, want 5", got)
	}
	if got := a[0].Stats().Accepted; got != before {
		t.Errorf("old upstream got %d new connections after the reload", got-before)
	}
	if err := held.echo(256 << 10); err != nil {
		t.Errorf("held session after reload: %v", err)
	}
	if int64(tb.eng.Metrics().Snapshot().ReloadsOK) != 1 {
		t.Errorf("ReloadsOK = %d, want 1", int64(tb.eng.Metrics().Snapshot().ReloadsOK))
	}
}

// TestReloadBroken: a configuration that fails to load or to build, or
// whose new listener cannot bind, is refused with its file and line; the
// engine serves on unchanged.
func TestReloadBroken(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	tb := startEngine(t, dir, guideConf(ups, ""))
	held := holdSession(t, tb.addr)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	inUse := "worker_processes 2;\nstream {\n" + upstreamBlock("backend", ups) + fmt.Sprintf(guideServer, "") +
		strings.Replace(fmt.Sprintf(guideServer, ""), "127.0.0.1:0;", busy.Addr().String()+";", 1) + "}\n"
	for _, tc := range []struct{ name, text, want string }{
		{"syntax", guideConf(ups, "proxy_timeout;"), "tlsrelay.conf:"},
		{"missing certificate", strings.Replace(guideConf(ups, ""), "client.pem", "nope.pem", 1), "nope.pem"},
		{"address in use", inUse, "bind() to " + busy.Addr().String() + " failed (98: Address already in use) in " + filepath.Join(dir, "tlsrelay.conf") + ":"},
	} {
		failed := int64(tb.eng.Metrics().Snapshot().ReloadsFailed)
		err := tb.reload(tc.text)
		if err == nil {
			t.Fatalf("%s: reload accepted a broken configuration", tc.name)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q does not name %q", tc.name, err, tc.want)
		}
		if tc.name == "address in use" && int64(tb.eng.Metrics().Snapshot().ReloadsFailed) != failed+1 {
			t.Errorf("%s: ReloadsFailed did not count it", tc.name)
		}
	}
	if n := len(tb.eng.Addrs()); n != 1 {
		t.Errorf("after the refused reloads %d listeners, want 1", n)
	}
	if _, err := echoOnce(tb.addr, []byte("still here"), 10*time.Second); err != nil {
		t.Fatalf("after broken reloads: %v", err)
	}
	if err := held.echo(1024); err != nil {
		t.Errorf("held session: %v", err)
	}
}

// TestReloadListeners: a listen directive added by a reload starts
// accepting; one removed stops (connection refused) while its sessions go
// on.
func TestReloadListeners(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	one := guideConf(ups, "")
	two := "worker_processes 2;\nstream {\n" + upstreamBlock("backend", ups) +
		fmt.Sprintf(guideServer, "") + fmt.Sprintf(guideServer, "") + "}\n"
	tb := startEngine(t, dir, one)
	if err := tb.reload(two); err != nil {
		t.Fatalf("reload adding a listener: %v", err)
	}
	addrs := tb.eng.Addrs()
	if len(addrs) != 2 || addrs[0].String() != tb.addr {
		t.Fatalf("after adding: listeners %v, first must stay %s", addrs, tb.addr)
	}
	second := addrs[1].String()
	if _, err := echoOnce(second, []byte("new listener"), 10*time.Second); err != nil {
		t.Fatalf("added listener: %v", err)
	}
	held := holdSession(t, second)
	if err := tb.reload(one); err != nil {
		t.Fatalf("reload removing a listener: %v", err)
	}
	if c, err := net.DialTimeout("tcp", second, 5*time.Second); err == nil {
		c.Close()
		t.Errorf("removed listener %s still accepts", second)
	}
	if err := held.echo(4096); err != nil {
		t.Errorf("session of the removed listener: %v", err)
	}
	if _, err := echoOnce(tb.addr, []byte("kept listener"), 10*time.Second); err != nil {
		t.Errorf("kept listener: %v", err)
	}
}

// TestReloadKeepsTickets: the first connections after a reload that left
// peers and TLS policy unchanged resume their sessions.
func TestReloadKeepsTickets(t *testing.T) {
	for _, v := range []string{"TLSv1.2", "TLSv1.3"} {
		t.Run(v, func(t *testing.T) {
			set, _, dir := newPKI(t, pki.ECDSAP256, 1)
			ups := startUpstreams(t, set, 3, backend.Echo, nil)
			text := strings.Replace(guideConf(ups, ""), "TLSv1.2 TLSv1.3", v, 1)
			tb := startEngine(t, dir, text)
			for i := 0; i < 3; i++ { // one full handshake per upstream
				if _, err := echoOnce(tb.addr, []byte("warm"), 10*time.Second); err != nil {
					t.Fatal(err)
				}
			}
			if err := tb.reload(strings.Replace(text, "proxy_timeout", "proxy_timeout", 1)); err != nil {
				t.Fatal(err)
			}
			full0, res0 := int64(tb.eng.Metrics().Snapshot().Full), int64(tb.eng.Metrics().Snapshot().Resumed)
			const n = 30
			for i := 0; i < n; i++ {
				if _, err := echoOnce(tb.addr, []byte("after"), 10*time.Second); err != nil {
					t.Fatal(err)
				}
			}
			full, res := int64(tb.eng.Metrics().Snapshot().Full)-full0, int64(tb.eng.Metrics().Snapshot().Resumed)-res0
			t.Logf("%s after reload: %d full, %d resumed of %d", v, full, res, n)
			if res != n {
				t.Errorf("after reload: %d of %d resumed (%d full), want all", res, n, full)
			}
		})
	}
}

// TestReloadStorm: 50 reloads while a client connects in a loop and 100
// sessions are held: no connection fails, every held session still echoes
// its bytes intact.
func TestReloadStorm(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 2, backend.Echo, nil)
	confs := []string{guideConf(ups, ""), guideConf(ups, "proxy_timeout 5m;")}
	tb := startEngine(t, dir, confs[0])
	const holds = 100
	held := make([]*heldSession, holds)
	for i := range held {
		held[i] = holdSession(t, tb.addr)
	}
	rss0, fds0 := selfRSS(t), countFDs(t)
	var connects, failures atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		deadline := time.Now().Add(2 * time.Minute)
		for i := 0; i < 100000 && time.Now().Before(deadline); i++ {
			select {
			case <-stop:
				return
			default:
			}
			connects.Add(1)
			got, err := echoOnce(tb.addr, []byte("storm"), 10*time.Second)
			if err == nil && !bytes.Equal(got, []byte("storm")) {
				err = fmt.Errorf("echo %q", got)
			}
			if err != nil {
				failures.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
		}
	}()
	const reloads = 50
	for i := 0; i < reloads; i++ {
		if err := tb.reload(confs[(i+1)%2]); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		// Let some connections through between reloads.
		want := connects.Load() + 2
		testutil.WaitFor(t, "connections between reloads", 20*time.Second, func() bool { return connects.Load() >= want })
	}
	close(stop)
	wg.Wait()
	t.Logf("%d reloads, %d connects, %d failed; test process RSS %.1f -> %.1f MiB, descriptors %d -> %d",
		reloads, connects.Load(), failures.Load(), float64(rss0)/(1<<20), float64(selfRSS(t))/(1<<20), fds0, countFDs(t))
	if n := failures.Load(); n != 0 {
		t.Errorf("%d of %d connects failed during reloads; first: %v", n, connects.Load(), firstErr.Load())
	}
	for i, h := range held {
		if err := h.echo(8 << 10); err != nil {
			t.Errorf("held session %d after the storm: %v", i, err)
		}
	}
}

// TestReopen: after the access log is renamed, Reopen sends new lines to
// a fresh file at the old path; nothing is lost or written twice.
func TestReopen(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	logPath := filepath.Join(dir, "access.log")
	text := "stream {\nlog_format main '$remote_port $status';\n" + upstreamBlock("backend", ups) +
		fmt.Sprintf(guideServer, "access_log "+logPath+" main buffer=4k;") + "}\n"
	tb := startEngine(t, dir, text)
	for i := 0; i < 3; i++ {
		if _, err := echoOnce(tb.addr, []byte("one"), 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, "three sessions ended", 10*time.Second, func() bool { return tb.eng.Metrics().Active() == 0 })
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	if err := tb.eng.Reopen(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, err := echoOnce(tb.addr, []byte("two"), 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, "two more sessions ended", 10*time.Second, func() bool { return tb.eng.Metrics().Active() == 0 })
	if err := tb.eng.Reopen(); err != nil { // flushes the buffer into the new file
		t.Fatal(err)
	}
	old, _ := os.ReadFile(logPath + ".1")
	cur, _ := os.ReadFile(logPath)
	if n := strings.Count(string(old), "\n"); n != 3 {
		t.Errorf("rotated file has %d lines, want 3:\n%s", n, old)
	}
	if n := strings.Count(string(cur), "\n"); n != 2 {
		t.Errorf("new file has %d lines, want 2:\n%s", n, cur)
	}
}

// TestReloadKeepsPeerHealth: a server banned by max_fails before a reload
// stays banned after it (the group is carried over), so the first clients
// after the reload do not pay for a connect to it again.
func TestReloadKeepsPeerHealth(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	dead := backend.RefusingAddr(t)
	text := "worker_processes 2;\nstream {\nupstream backend {\n    server " + dead + " max_fails=1 fail_timeout=60s;\n    server " + ups[0].Addr() + ";\n}\n" +
		fmt.Sprintf(guideServer, "") + "}\n"
	tb := startEngine(t, dir, text)
	failures := func() int { return strings.Count(tb.logText(), "connect() failed") }
	for i := 0; i < 4; i++ {
		if _, err := echoOnce(tb.addr, []byte("x"), 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if n := failures(); n != 1 {
		t.Fatalf("before the reload %d failed connects, want 1:\n%s", n, tb.logText())
	}
	if err := tb.reload(text); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		if _, err := echoOnce(tb.addr, []byte("x"), 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if n := failures(); n != 1 {
		t.Errorf("after the reload %d failed connects in all, want still 1 (the ban carried over)", n)
	}
}

// TestReloadStartOnly: a reload that changes worker_processes or
// worker_cpu_affinity is applied for everything else, and says in a
// [warn] naming the file and line that the loops stay as they started.
func TestReloadStartOnly(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	tb := startEngine(t, dir, guideConf(ups, ""))
	conf := filepath.Join(dir, "tlsrelay.conf")
	for _, tc := range []struct {
		name, text string
		want       []string
	}{
		{"unchanged", guideConf(ups, ""), nil},
		{"worker_processes", strings.Replace(guideConf(ups, ""), "worker_processes 2;", "worker_processes 3;", 1),
			[]string{`[warn] ` + tb.eng.pid + `#0: "worker_processes" is 3 in ` + conf + `:1, but a reload keeps the 2 event loop(s) this process started with`}},
		{"worker_cpu_affinity", strings.Replace(guideConf(ups, ""), "worker_processes 2;", "worker_processes 2;\nworker_cpu_affinity auto;", 1),
			[]string{`"worker_cpu_affinity" changed in ` + conf + `:2, but a reload keeps the event loops pinned as they were at start`}},
	} {
		before := strings.Count(tb.logText(), "[warn]")
		if err := tb.reload(tc.text); err != nil {
			t.Fatalf("%s: reload: %v", tc.name, err)
		}
		log := tb.logText()
		if got := strings.Count(log, "[warn]") - before; got != len(tc.want) {
			t.Errorf("%s: %d new warnings, want %d\n%s", tc.name, got, len(tc.want), log)
		}
		for _, w := range tc.want {
			if !strings.Contains(log, w) {
				t.Errorf("%s: the log does not say %q\n%s", tc.name, w, log)
			}
		}
		if _, err := echoOnce(tb.addr, []byte("after "+tc.name), 10*time.Second); err != nil {
			t.Errorf("%s: a connection after the reload: %v", tc.name, err)
		}
	}
}
