package main

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// startSleep starts a copy of sleep(1) named name in dir (argv[0] argv0,
// "" for the path) and returns it; it is killed and reaped at the end of
// the test.
func startSleep(t *testing.T, dir, name, argv0 string) *exec.Cmd {
	t.Helper()
	sleep := testutil.NeedProgram(t, "sleep", "coreutils")
	path := sleep
	if name != "" {
		path = filepath.Join(dir, name)
		copyFile(t, sleep, path, 0o755)
	}
	cmd := exec.Command(path, "60")
	if argv0 != "" {
		cmd.Args[0] = argv0
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestStopStalePID: a pid file left by a crash names a pid that an
// unrelated process (sleep) now has. `tlsrelay -s stop` (the real binary)
// refuses with exit status 1, names the pid file, the pid and the process,
// and sleep is not signalled: killed by us afterwards, it dies of our
// SIGKILL, not of a SIGTERM from tlsrelay (a fatal SIGTERM would have
// marked it exiting during tlsrelay's kill(2), and its status would say
// so).
func TestStopStalePID(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	sleep := startSleep(t, dir, "", "")
	pid := sleep.Process.Pid
	pidFile := filepath.Join(dir, "run.pid")
	writeFile(t, pidFile, strconv.Itoa(pid)+"\n")
	conf := filepath.Join(dir, "t.conf")
	writeFile(t, conf, "pid run.pid;\n")

	for _, sig := range []string{"stop", "quit", "reload", "reopen"} {
		out, err := exec.Command(bin, "-p", dir, "-c", conf, "-s", sig).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("-s %s: %v, want exit status 1\n%s", sig, err, out)
		}
		for _, want := range []string{`the pid file "` + pidFile + `" holds pid ` + strconv.Itoa(pid),
			"not a tlsrelay process", "sleep", `sleep 60"`, "the pid file is stale"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("-s %s said %q, want it to say %q", sig, out, want)
			}
		}
	}
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("sleep is gone: %v", err)
	}
	sleep.Process.Kill()
	err := sleep.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("sleep ended with %v", err)
	}
	if ws := ee.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("sleep ended by %v, want our SIGKILL: tlsrelay -s signalled it", ws)
	}
}

// TestIdentify: which processes -s takes for a tlsrelay. Copies of
// sleep(1) stand for binaries of each name, since only the name and the
// file matter.
func TestIdentify(t *testing.T) {
	dir := t.TempDir()
	deleted := startSleep(t, dir, "tlsrelay", "")
	if err := os.Remove(filepath.Join(dir, "tlsrelay")); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name  string
		pid   int
		relay bool
		what  string // part of the description
	}{
		{"this process", os.Getpid(), true, ""},
		{"sleep", startSleep(t, dir, "", "").Process.Pid, false, `sleep 60"`},
		{"a binary named tlsrelay-*", startSleep(t, dir, "tlsrelay-1.2", "").Process.Pid, true, ""},
		{"a replaced binary (deleted)", deleted.Process.Pid, true, "tlsrelay (deleted)"},
		{"argv[0] tlsrelay", startSleep(t, dir, "relay", "/usr/sbin/tlsrelay").Process.Pid, true, ""},
		{"another name", startSleep(t, dir, "nginx", "").Process.Pid, false, filepath.Join(dir, "nginx")},
		{"no such process", 1 << 30, true, ""},
	} {
		p := identify(tt.pid)
		if p.relay != tt.relay || !strings.Contains(p.what, tt.what) {
			t.Errorf("%s: identify(%d) = %+v, want relay %v, description with %q", tt.name, tt.pid, p, tt.relay, tt.what)
		}
	}
}
