package main

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// TestSystemdUnit checks docs/systemd/tlsrelay.service with
// systemd-analyze verify (Debian's systemd package), pointed at a built
// binary: verify wants the ExecStart command to exist. verify exits 0 on
// settings it ignores, so any output fails the test too.
func TestSystemdUnit(t *testing.T) {
	sa := testutil.NeedProgram(t, "systemd-analyze", "systemd")
	bin := buildBinary(t)
	src, err := os.ReadFile("../../docs/systemd/tlsrelay.service")
	if err != nil {
		t.Fatal(err)
	}
	text := string(src)
	for _, want := range []string{"Type=notify\n", "NotifyAccess=all\n", "ExecReload=/bin/kill -HUP $MAINPID\n",
		"KillSignal=SIGQUIT\n", "Restart=on-failure\n", "AmbientCapabilities=CAP_NET_BIND_SERVICE\n",
		"ExecStart=/usr/local/sbin/tlsrelay -c /etc/tlsrelay/tlsrelay.conf\n"} {
		if !strings.Contains(text, want) {
			t.Errorf("the unit lacks %q", want)
		}
	}
	unit := filepath.Join(t.TempDir(), "tlsrelay.service")
	writeFile(t, unit, strings.ReplaceAll(text, "/usr/local/sbin/tlsrelay", bin))
	out, err := exec.Command(sa, "verify", unit).CombinedOutput()
	if err != nil || len(out) != 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func TestListenKeys(t *testing.T) {
	cfg := &conf.Config{Stream: &conf.Stream{Servers: []*conf.Server{
		{Listen: []conf.Listen{{Network: "tcp", Addr: "127.0.0.1:80"}, {Network: "tcp", Addr: "0.0.0.0:443", ReusePort: true}}},
		{Listen: []conf.Listen{{Network: "tcp", Addr: "[::1]:8443"}, {Network: "unix", Addr: "unix:/run/t.sock"}}},
	}}}
	cfg.Main.MetricsListen = "127.0.0.1:9100"
	live := listenKeys(cfg)
	tests := []struct {
		key  string
		want bool
	}{
		{"tcp 127.0.0.1:80", true},
		{"tcp 127.0.0.1:80#1", false}, // no reuseport: a single socket
		{"tcp 0.0.0.0:443", true},
		{"tcp 0.0.0.0:443#3", true},
		{"tcp [::1]:8443", true},
		{"tcp 127.0.0.1:81", false},
		{"unix 127.0.0.1:80", false},
		{"unix /run/t.sock", true}, // the engine names a unix socket by its bare path
		{"unix unix:/run/t.sock", false},
		{"unix /run/u.sock", false},
		{"tcp 127.0.0.1:9100", true}, // metrics_listen: pruning it killed /metrics at the first reload
	}
	for _, tt := range tests {
		if got := live(tt.key); got != tt.want {
			t.Errorf("live(%q) = %v, want %v", tt.key, got, tt.want)
		}
	}
	if listenKeys(&conf.Config{})("tcp 127.0.0.1:80") {
		t.Error("a configuration without stream lists a socket")
	}
}

// startServing starts bin on path and waits for the pid file.
func startServing(t *testing.T, bin, dir, path, pidFile string) *proc {
	t.Helper()
	p := startProc(t, bin, nil, "-p", dir, "-c", path)
	testutil.WaitFor(t, "the pid file", 20*time.Second, func() bool {
		select {
		case <-p.done:
			t.Fatalf("tlsrelay exited: %v\n%s", p.err, p.stderr())
		default:
		}
		return readPID(pidFile) == p.cmd.Process.Pid
	})
	return p
}

// signalCmd runs `tlsrelay -s sig` on the configuration.
func signalCmd(t *testing.T, bin, dir, path, sig string) {
	t.Helper()
	if out, err := exec.Command(bin, "-p", dir, "-c", path, "-s", sig).CombinedOutput(); err != nil {
		t.Fatalf("tlsrelay -s %s: %v\n%s", sig, err, out)
	}
}

// TestReloadListeners runs the binary (with binary upgrades enabled, so
// that the upgrader holds a copy of every listening socket), reloads it
// with `-s reload` to add a listener and remove another, and checks that
// HUP did not end the process, the added one accepts and the removed one
// refuses, and that a held session on the removed one goes on.
func TestReloadListeners(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	up, err := backend.Start(backend.Config{Mode: backend.Echo})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	a, b, c := testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t)
	path := filepath.Join(dir, "t.conf")
	pidFile := filepath.Join(dir, "run.pid")
	errLog := filepath.Join(dir, "error.log")
	write := func(addrs ...string) {
		text := "pid run.pid;\nerror_log " + errLog + " notice;\nstream {\n    server {\n"
		for _, x := range addrs {
			text += "        listen " + x + ";\n"
		}
		writeFile(t, path, text+"        proxy_pass "+up.Addr()+";\n    }\n}\n")
	}
	write(a, b)
	p := startServing(t, bin, dir, path, pidFile)
	pid := strconv.Itoa(p.cmd.Process.Pid)
	held, err := net.Dial("tcp", b)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if err := echo(held, "held\n"); err != nil {
		t.Fatal(err)
	}

	write(a, c)
	signalCmd(t, bin, dir, path, "reload")
	testutil.WaitFor(t, "the reload to finish", 20*time.Second, func() bool {
		return fileHas(errLog, "[notice] "+pid+"#0: reconfigured") || fileHas(errLog, "reload failed")
	})
	if !fileHas(errLog, "[notice] "+pid+"#0: reconfigured") {
		b, _ := os.ReadFile(errLog)
		t.Fatalf("reload failed:\n%s", b)
	}
	select {
	case <-p.done:
		t.Fatalf("tlsrelay ended at SIGHUP: %v", p.err)
	default:
	}
	for _, x := range []string{a, c} {
		if err := dialEcho(x, "kept or added\n"); err != nil {
			t.Errorf("%s after the reload: %v", x, err)
		}
	}
	_, err = net.DialTimeout("tcp", b, 2*time.Second)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("connecting to the removed listener %s: %v, want connection refused", b, err)
	}
	if err := echo(held, "held after\n"); err != nil {
		t.Errorf("a session of the removed listener: %v", err)
	}
}

// TestReopen renames the logs as logrotate does, sends `-s reopen`, and
// checks that the process writes to new files from then on: the error log
// and the access log (the engine's), nothing lost across the switch.
func TestReopen(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	up, err := backend.Start(backend.Config{Mode: backend.Echo})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	addr := testutil.FreeAddr(t)
	path := filepath.Join(dir, "t.conf")
	pidFile := filepath.Join(dir, "run.pid")
	errLog, accLog := filepath.Join(dir, "error.log"), filepath.Join(dir, "access.log")
	writeFile(t, path, "pid run.pid;\nerror_log "+errLog+" notice;\nstream {\n"+
		"    log_format basic '$remote_addr $bytes_received';\n    access_log "+accLog+" basic;\n"+
		"    server { listen "+addr+"; proxy_pass "+up.Addr()+"; }\n}\n")
	p := startServing(t, bin, dir, path, pidFile)
	pid := strconv.Itoa(p.cmd.Process.Pid)
	lines := func(path string) int {
		b, _ := os.ReadFile(path)
		return strings.Count(string(b), "\n")
	}
	if err := dialEcho(addr, "before\n"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the first access-log line", 10*time.Second, func() bool { return lines(accLog) == 1 })

	for _, f := range []string{errLog, accLog} {
		if err := os.Rename(f, f+".1"); err != nil {
			t.Fatal(err)
		}
	}
	signalCmd(t, bin, dir, path, "reopen")
	testutil.WaitFor(t, "the reopened error log", 10*time.Second, func() bool { return fileHas(errLog, "[notice] "+pid+"#0: reopened the logs") })
	if !fileHas(errLog+".1", "signal 10 (SIGUSR1) received, reopening logs") {
		t.Error("the old error log does not record the signal")
	}
	if err := dialEcho(addr, "after\n"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the access-log line in the new file", 10*time.Second, func() bool { return lines(accLog) == 1 })
	if n := lines(accLog + ".1"); n != 1 {
		t.Errorf("the renamed access log has %d lines, want 1 (the session before the reopen)", n)
	}
	signalCmd(t, bin, dir, path, "quit")
	select {
	case <-p.done:
		if p.err != nil {
			t.Errorf("after -s quit: %v\n%s", p.err, p.stderr())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no exit after -s quit")
	}
}
