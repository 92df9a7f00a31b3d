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

	"golang.org/x/sys/unix"
)

// TestBinaryUpgradeUnix: a unix domain socket listener survives a binary
// upgrade: the old process hands it over and exits without deleting the
// file, the new one accepts on the same socket (same inode), keeps it
// across `-s reload`, and deletes the file when it stops.
func TestBinaryUpgradeUnix(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	up, ssl := tlsUpstream(t, dir)
	ns := newNotifySock(t)
	sd, err := os.MkdirTemp("", "tru")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sd) })
	sock := filepath.Join(sd, "in.sock")
	path := filepath.Join(dir, "t.conf")
	errLog := filepath.Join(dir, "error.log")
	writeFile(t, path, "pid run.pid;\nerror_log "+errLog+" notice;\nworker_processes 1;\nstream {\n    server {\n"+
		"        listen unix:"+sock+";\n        proxy_pass "+up.Addr()+";\n        "+ssl+"\n    }\n}\n")
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Skipf("cannot become a subreaper to reap the upgraded process: %v", err)
	}
	unixEcho := func(line string) error {
		c, err := net.DialTimeout("unix", sock, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		return echo(c, line)
	}
	ino := func() uint64 {
		fi, err := os.Stat(sock)
		if err != nil {
			t.Fatalf("the socket file: %v", err)
		}
		return fi.Sys().(*syscall.Stat_t).Ino
	}

	old := startProc(t, bin, []string{"NOTIFY_SOCKET=" + ns.path}, "-p", dir, "-c", path)
	oldPID := old.cmd.Process.Pid
	ns.expect(t, oldPID, "READY=1")
	if err := unixEcho("before\n"); err != nil {
		t.Fatal(err)
	}
	before := ino()

	if err := old.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	m, _ := ns.expect(t, 0, "MAINPID=")
	newPID, err := strconv.Atoi(strings.TrimPrefix(m.state, "MAINPID="))
	if err != nil || newPID == oldPID {
		t.Fatalf("after SIGUSR2: %q", m.state)
	}
	defer unix.Kill(newPID, syscall.SIGKILL)
	ns.expect(t, newPID, "READY=1")
	select {
	case <-old.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the old process did not exit\n%s", old.stderr())
	}
	if got := ino(); got != before {
		t.Errorf("socket file after the upgrade: inode %d, was %d", got, before)
	}
	if err := unixEcho("after the upgrade\n"); err != nil {
		t.Fatalf("through the new process: %v", err)
	}

	if out, err := ctlSignal(bin, dir, path, "reload"); err != nil {
		t.Fatalf("tlsrelay -s reload: %v\n%s", err, out)
	}
	ns.expect(t, newPID, "RELOADING=1")
	ns.expect(t, newPID, "READY=1")
	if got := ino(); got != before {
		t.Errorf("socket file after the reload: inode %d, was %d", got, before)
	}
	if err := unixEcho("after the reload\n"); err != nil {
		t.Fatalf("after the reload: %v", err)
	}

	if out, err := ctlSignal(bin, dir, path, "quit"); err != nil {
		t.Fatalf("tlsrelay -s quit: %v\n%s", err, out)
	}
	var ws unix.WaitStatus
	if _, err := unix.Wait4(newPID, &ws, 0, nil); err != nil || ws.ExitStatus() != 0 {
		t.Errorf("new process: wait %v, status %v", err, ws)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after the new process stopped: %v", err)
	}
}

// ctlSignal runs `tlsrelay -s sig` and returns its output.
func ctlSignal(bin, dir, path, sig string) ([]byte, error) {
	return exec.Command(bin, "-p", dir, "-c", path, "-s", sig).CombinedOutput()
}
