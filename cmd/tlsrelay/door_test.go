package main

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// TestDoorLeftBySIGKILL: a tlsrelay killed with SIGKILL leaves its
// TMPDIR/tlsrelay-PID-* door directory; the next start removes it (its
// process is gone, nobody listens on its socket) and says so in the error
// log, and keeps its own until it stops.
func TestDoorLeftBySIGKILL(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	up, ssl := faultUpstream(t, dir)
	addr := testutil.FreeAddr(t)
	errLog := filepath.Join(dir, "error.log")
	conf := filepath.Join(dir, "t.conf")
	writeFile(t, conf, "error_log "+errLog+" notice;\nworker_processes 1;\n"+streamBlock(addr, up.Addr(), ssl, filepath.Join(dir, "access.log")))
	start := func() *faultProc {
		p := &faultProc{errLog: errLog, done: make(chan error, 1)}
		p.cmd = exec.Command(bin, "-p", dir, "-c", conf)
		p.cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
		p.cmd.Stderr = io.Discard
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		p.pid = p.cmd.Process.Pid
		go func() { p.done <- p.cmd.Wait() }()
		t.Cleanup(p.stop)
		waitListening(t, p, addr)
		return p
	}
	doors := func(pid int) []string {
		m, _ := filepath.Glob(filepath.Join(tmp, "tlsrelay-"+strconv.Itoa(pid)+"-*"))
		return m
	}

	first := start()
	// The listener accepts before the event loops (and their door) have
	// started: wait for the door.
	var left []string
	testutil.WaitFor(t, "the first process's door", 30*time.Second, func() bool {
		left = doors(first.pid)
		if len(left) != 1 {
			return false
		}
		_, err := os.Stat(filepath.Join(left[0], "door"))
		return err == nil
	})
	first.cmd.Process.Signal(syscall.SIGKILL)
	<-first.done
	first.stopped = true
	if _, err := os.Stat(filepath.Join(left[0], "door")); err != nil {
		t.Fatalf("the killed process left no door (nothing to test): %v", err)
	}

	second := start()
	// The listener accepts before the event loops (and their door) have
	// started: wait for the door and the notice, which come with them.
	want := "[notice] " + strconv.Itoa(second.pid) + "#0: removed " + left[0] + ", the event loops' door left by a tlsrelay process that is no longer running"
	testutil.WaitFor(t, "the second process's door and its notice", 30*time.Second, func() bool {
		return len(doors(second.pid)) == 1 && strings.Contains(second.log(), want)
	})
	if _, err := os.Lstat(left[0]); !os.IsNotExist(err) {
		t.Errorf("the killed process's %s is still there: %v", left[0], err)
	}
	if !strings.Contains(second.log(), want) {
		t.Errorf("error log:\n%s\nwant a line with %q", second.log(), want)
	}
	if own := doors(second.pid); len(own) != 1 {
		t.Errorf("door directories of the second process: %q", own)
	}
	second.stop()
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("left in TMPDIR after a clean stop: %v", ents)
	}
}
