package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// notifySock is a NOTIFY_SOCKET for tests: a unixgram socket that reads
// sd_notify messages with their sender's pid (SO_PASSCRED).
type notifySock struct {
	path string
	conn *net.UnixConn
}

// notification is one sd_notify datagram.
type notification struct {
	pid   int
	state string
}

func newNotifySock(t *testing.T) *notifySock {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1) }); err != nil || serr != nil {
		t.Fatalf("SO_PASSCRED: %v %v", err, serr)
	}
	return &notifySock{path: path, conn: c}
}

// next returns the next datagram, or fails the test after d.
func (n *notifySock) next(t *testing.T, d time.Duration) notification {
	t.Helper()
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred))
	n.conn.SetReadDeadline(time.Now().Add(d))
	k, oobn, _, _, err := n.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatalf("no sd_notify message within %v: %v", d, err)
	}
	pid := 0
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for _, m := range msgs {
			if cred, err := unix.ParseUnixCredentials(&m); err == nil {
				pid = int(cred.Pid)
			}
		}
	}
	return notification{pid: pid, state: string(buf[:k])}
}

// expect reads datagrams until one has a state starting with prefix (and,
// when pid is not 0, comes from pid); it returns it and what came before.
func (n *notifySock) expect(t *testing.T, pid int, prefix string) (notification, []notification) {
	t.Helper()
	var before []notification
	deadline := time.Now().Add(30 * time.Second)
	for {
		m := n.next(t, time.Until(deadline))
		if strings.HasPrefix(m.state, prefix) && (pid == 0 || m.pid == pid) {
			return m, before
		}
		before = append(before, m)
	}
}

// tlsUpstream starts a TLS echo upstream that requires a client
// certificate, and returns it with the proxy_ssl directives that reach it.
func tlsUpstream(t *testing.T, dir string) (*backend.Server, string) {
	t.Helper()
	set, err := pki.NewSet(pki.ECDSAP256, 1)
	if err != nil {
		t.Fatal(err)
	}
	files, err := set.WriteFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	up, err := backend.Start(backend.Config{TLS: set.ServerConfig(), Mode: backend.Echo})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	ssl := fmt.Sprintf("proxy_ssl on; proxy_ssl_certificate %s; proxy_ssl_certificate_key %s;\n"+
		"        proxy_ssl_trusted_certificate %s; proxy_ssl_verify on; proxy_ssl_session_reuse on;",
		files.ClientCert, files.ClientKey, files.CA)
	return up, ssl
}

// echo writes line on c and reads it back.
func echo(c net.Conn, line string) error {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, line); err != nil {
		return fmt.Errorf("writing: %w", err)
	}
	got := make([]byte, len(line))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("reading the echo: %w", err)
	}
	if string(got) != line {
		return fmt.Errorf("echo %q, want %q", got, line)
	}
	return nil
}

// dialEcho connects to addr and echoes one line.
func dialEcho(addr, line string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	return echo(c, line)
}

// writeFile writes a test file.
func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fileHas reports whether the file at path contains s.
func fileHas(path, s string) bool {
	b, err := os.ReadFile(path)
	return err == nil && strings.Contains(string(b), s)
}

// TestNotifyProtocol runs the serve path in process with NOTIFY_SOCKET set
// and checks what systemd would read: READY=1 once listening,
// RELOADING=1 (with MONOTONIC_USEC) and READY=1 around a good and a
// broken reload, the broken one logged at [emerg] with file:line while the
// process goes on serving, and STOPPING=1 at SIGQUIT.
func TestNotifyProtocol(t *testing.T) {
	dir := t.TempDir()
	ns := newNotifySock(t)
	t.Setenv("NOTIFY_SOCKET", ns.path)
	up, err := backend.Start(backend.Config{Mode: backend.Echo})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	addr := testutil.FreeAddr(t)
	path := filepath.Join(dir, "t.conf")
	errLog := filepath.Join(dir, "error.log")
	conf := "error_log " + errLog + " notice;\nstream {\n    server { listen " + addr +
		"; proxy_pass " + up.Addr() + "; %s }\n}\n"
	writeFile(t, path, fmt.Sprintf(conf, ""))

	sigs, hups := make(chan os.Signal, 1), make(chan os.Signal, 1)
	var stderr testutil.Buffer
	r := &runner{o: options{prefix: dir, conf: path}, stderr: &stderr, sigs: sigs, hups: hups, notify: sdNotify,
		noUpgrade: errors.New("upgrades are not tested in process")}
	code := make(chan int, 1)
	go func() { code <- r.run() }()
	defer func() {
		select {
		case sigs <- syscall.SIGTERM:
		case <-code:
		}
	}()

	pid := os.Getpid()
	ns.expect(t, pid, "READY=1")
	if err := dialEcho(addr, "first\n"); err != nil {
		t.Fatal(err)
	}

	reload := func(what string) {
		t.Helper()
		hups <- syscall.SIGHUP
		m, _ := ns.expect(t, pid, "RELOADING=1")
		usec, ok := strings.CutPrefix(m.state, "RELOADING=1\nMONOTONIC_USEC=")
		if n, err := strconv.ParseInt(usec, 10, 64); !ok || err != nil || n <= 0 {
			t.Errorf("%s: reload notification %q, want RELOADING=1 and MONOTONIC_USEC=", what, m.state)
		}
		if m, before := ns.expect(t, pid, "READY=1"); m.state != "READY=1" || len(before) != 0 {
			t.Errorf("%s: after RELOADING=1: %v then %q, want READY=1", what, before, m.state)
		}
	}

	// A good reload: proxy_timeout changes.
	writeFile(t, path, fmt.Sprintf(conf, "proxy_timeout 5m;"))
	reload("good reload")
	if !fileHas(errLog, "[notice] "+strconv.Itoa(pid)+"#0: reconfigured") {
		b, _ := os.ReadFile(errLog)
		t.Errorf("good reload: the error log does not say reconfigured:\n%s", b)
	}
	if err := dialEcho(addr, "after reload\n"); err != nil {
		t.Fatal(err)
	}

	// A broken one: [emerg] with file:line, and nothing changes.
	writeFile(t, path, "error_log "+errLog+" notice;\nstream {\n    bogus on;\n}\n")
	reload("broken reload")
	want := "[emerg] " + strconv.Itoa(pid) + "#0: unknown directive \"bogus\" in " + path + ":3\n"
	if !fileHas(errLog, want) {
		b, _ := os.ReadFile(errLog)
		t.Errorf("broken reload: the error log lacks %q:\n%s", want, b)
	}
	if err := dialEcho(addr, "after broken reload\n"); err != nil {
		t.Fatalf("after a broken reload: %v", err)
	}

	sigs <- syscall.SIGQUIT
	ns.expect(t, pid, "STOPPING=1")
	select {
	case c := <-code:
		if c != 0 {
			t.Errorf("exit code %d after SIGQUIT\n%s", c, stderr.String())
		}
		// run has returned: its engine can be read.
		if st := r.e.Metrics().Snapshot(); st.ReloadsOK != 1 || st.ReloadsFailed != 1 {
			t.Errorf("metrics count %d reloads ok and %d failed, want 1 and 1", st.ReloadsOK, st.ReloadsFailed)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit within 30s of SIGQUIT")
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("still accepting after the graceful stop")
	}
}

// proc is a tlsrelay process started by a test. Its stderr goes to a
// file: a process a binary upgrade starts inherits it, and a pipe would
// keep Wait waiting for that process too.
type proc struct {
	cmd        *exec.Cmd
	stderrPath string
	// done is closed when the process has exited; err is then Wait's.
	done chan struct{}
	err  error
}

// stderr returns what the process (and any it started) wrote to stderr.
func (p *proc) stderr() string {
	b, _ := os.ReadFile(p.stderrPath)
	return string(b)
}

// startProc starts bin with args and env (added to the test's).
func startProc(t *testing.T, bin string, env []string, args ...string) *proc {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := &proc{cmd: exec.Command(bin, args...), stderrPath: f.Name(), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stderr = f
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// readPID returns the pid the pid file holds (0: none).
func readPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil || !bytes.HasSuffix(b, []byte("\n")) {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// TestBinaryUpgrade builds the binary, runs it with a session held open
// through it and a client connecting in a loop, and upgrades it with
// SIGUSR2: the new process takes over the listening socket (MAINPID and
// READY=1 from it, the pid file names it), no connection fails during the
// handover, the held session still echoes in the old process, `-s reload`
// reaches the new process, and the old process exits once the held session
// ends.
func TestBinaryUpgrade(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	up, ssl := tlsUpstream(t, dir)
	ns := newNotifySock(t)
	addr := testutil.FreeAddr(t)
	path := filepath.Join(dir, "t.conf")
	pidFile := filepath.Join(dir, "run.pid")
	errLog := filepath.Join(dir, "error.log")
	writeFile(t, path, "pid run.pid;\nerror_log "+errLog+" notice;\nworker_processes 2;\nstream {\n    server {\n"+
		"        listen "+addr+";\n        proxy_pass "+up.Addr()+";\n        "+ssl+"\n    }\n}\n")

	// The new process is the old one's child; once the old one exits it
	// must be reparented to this test, which reaps it.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Skipf("cannot become a subreaper to reap the upgraded process: %v", err)
	}
	old := startProc(t, bin, []string{"NOTIFY_SOCKET=" + ns.path}, "-p", dir, "-c", path)
	oldPID := old.cmd.Process.Pid
	ns.expect(t, oldPID, "READY=1")
	if got := readPID(pidFile); got != oldPID {
		t.Fatalf("pid file holds %d, want %d", got, oldPID)
	}

	held, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if err := echo(held, "held before\n"); err != nil {
		t.Fatal(err)
	}

	// A client connecting in a loop, each connection echoing one line,
	// until told to stop (at most 5000 connections or 60 s).
	var okN atomic.Int64
	stop := make(chan struct{})
	loopDone := make(chan []error, 1)
	go func() {
		var errs []error
		deadline := time.Now().Add(60 * time.Second)
		for i := 0; i < 5000 && time.Now().Before(deadline); i++ {
			select {
			case <-stop:
				loopDone <- errs
				return
			default:
			}
			if err := dialEcho(addr, "loop "+strconv.Itoa(i)+"\n"); err != nil {
				errs = append(errs, err)
			} else {
				okN.Add(1)
			}
		}
		loopDone <- errs
	}()
	testutil.WaitFor(t, "the first looped connection", 10*time.Second, func() bool { return okN.Load() > 0 })

	if err := old.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	m, before := ns.expect(t, 0, "MAINPID=")
	newPID, err := strconv.Atoi(strings.TrimPrefix(m.state, "MAINPID="))
	if err != nil || newPID == oldPID || m.pid != newPID {
		t.Fatalf("after SIGUSR2: %q from pid %d (old %d)", m.state, m.pid, oldPID)
	}
	defer unix.Kill(newPID, syscall.SIGKILL)
	_, more := ns.expect(t, newPID, "READY=1")
	for _, n := range append(before, more...) {
		if n.pid == oldPID && n.state == "STOPPING=1" {
			t.Errorf("the old process sent STOPPING=1 during the upgrade: systemd would stop the service")
		}
	}
	testutil.WaitFor(t, "the pid file to name the new process", 10*time.Second, func() bool { return readPID(pidFile) == newPID })

	// Connections go on through the new process: let the loop make 50
	// more after the handover, then stop it.
	atHandover := okN.Load()
	testutil.WaitFor(t, "50 connections after the upgrade", 30*time.Second, func() bool { return okN.Load() >= atHandover+50 })
	close(stop)
	errs := <-loopDone
	if len(errs) != 0 {
		t.Errorf("%d of %d connections failed during the upgrade, the first: %v", len(errs), int(okN.Load())+len(errs), errs[0])
	}
	t.Logf("%d connections during the upgrade, %d failed", int(okN.Load())+len(errs), len(errs))

	// The old process drains: the held session still echoes there.
	select {
	case <-old.done:
		t.Fatalf("the old process exited with a session open: %v\n%s", old.err, old.stderr())
	default:
	}
	if err := echo(held, "held after\n"); err != nil {
		t.Errorf("the held session after the upgrade: %v", err)
	}

	// `-s reload` reads the pid file: it reaches the new process.
	if out, err := exec.Command(bin, "-p", dir, "-c", path, "-s", "reload").CombinedOutput(); err != nil {
		t.Fatalf("tlsrelay -s reload: %v\n%s", err, out)
	}
	ns.expect(t, newPID, "RELOADING=1")
	ns.expect(t, newPID, "READY=1")
	if !fileHas(errLog, "[notice] "+strconv.Itoa(newPID)+"#0: reconfigured") {
		b, _ := os.ReadFile(errLog)
		t.Errorf("the new process did not reload:\n%s", b)
	}

	held.Close()
	select {
	case <-old.done:
		if old.err != nil {
			t.Errorf("old process: %v\n%s", old.err, old.stderr())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the old process did not exit after its last session ended\n%s", old.stderr())
	}
	if got := readPID(pidFile); got != newPID {
		t.Errorf("after the old process exited the pid file holds %d, want %d", got, newPID)
	}
	if err := dialEcho(addr, "after the old one left\n"); err != nil {
		t.Errorf("through the new process: %v", err)
	}

	// The new process stops as any other.
	if out, err := exec.Command(bin, "-p", dir, "-c", path, "-s", "quit").CombinedOutput(); err != nil {
		t.Fatalf("tlsrelay -s quit: %v\n%s", err, out)
	}
	ns.expect(t, newPID, "STOPPING=1")
	var ws unix.WaitStatus
	if _, err := unix.Wait4(newPID, &ws, 0, nil); err != nil || ws.ExitStatus() != 0 {
		t.Errorf("new process: wait %v, status %v", err, ws)
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("pid file left behind: %v", err)
	}
}
