package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// TestStopWithPendingHandshakes runs the binary with 300 sessions whose
// upstream TLS handshakes hang (the upstream accepts and never answers the
// ClientHello; proxy_connect_timeout is the default 60 s) and stops it with
// SIGTERM and with `-s stop`: it must exit at once, as the documentation
// says, not when the handshakes time out (issue 18 part 4).
func TestStopWithPendingHandshakes(t *testing.T) {
	const n = 300
	bin := buildBinary(t)
	for _, how := range []string{"SIGTERM", "-s stop"} {
		t.Run(how, func(t *testing.T) {
			up := testutil.SilentUpstream(t)
			dir := t.TempDir()
			path := filepath.Join(dir, "t.conf")
			addr := testutil.FreeAddr(t)
			src := "pid run.pid;\nerror_log " + filepath.Join(dir, "error.log") + " notice;\n" +
				"events { worker_connections 4096; }\n" +
				"stream { server { listen " + addr + "; proxy_pass " + up.Addr() + "; proxy_ssl on; } }\n"
			if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bin, "-p", dir, "-c", path)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			defer func() {
				select {
				case <-done:
				default:
					cmd.Process.Kill()
					<-done
				}
			}()
			waitPidFile(t, filepath.Join(dir, "run.pid"), done, &stderr)
			for i := 0; i < n; i++ {
				c, err := net.DialTimeout("tcp", addr, 10*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
			}
			deadline := time.Now().Add(30 * time.Second)
			for up.Accepted() < n {
				if time.Now().After(deadline) {
					t.Fatalf("the upstream saw %d of %d handshakes start", up.Accepted(), n)
				}
				time.Sleep(5 * time.Millisecond)
			}
			start := time.Now()
			if how == "SIGTERM" {
				if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
			} else if out, err := exec.Command(bin, "-p", dir, "-c", path, "-s", "stop").CombinedOutput(); err != nil {
				t.Fatalf("tlsrelay -s stop: %v\n%s", err, out)
			}
			select {
			case err := <-done:
				done <- err
				if err != nil {
					t.Errorf("tlsrelay after %s: %v\n%s", how, err, stderr.String())
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("tlsrelay still running 20s after %s with %d handshakes pending\n%s", how, n, stderr.String())
			}
			t.Logf("%s with %d handshakes pending: exited after %v", how, n, time.Since(start))
			if open := up.Open(); open != 0 {
				// The process is gone, so the kernel closed its sockets;
				// the reads see it once the peer's goroutines run.
				deadline := time.Now().Add(10 * time.Second)
				for up.Open() != 0 && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond)
				}
				if open := up.Open(); open != 0 {
					t.Errorf("%d upstream connections still open after the exit", open)
				}
			}
		})
	}
}

// waitPidFile waits until the process has written its pid file (it has
// bound its listeners), failing if it exits first.
func waitPidFile(t *testing.T, pid string, done chan error, stderr *bytes.Buffer) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("tlsrelay exited early: %v\n%s", err, stderr.String())
		default:
		}
		if data, err := os.ReadFile(pid); err == nil && strings.HasSuffix(string(data), "\n") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pid file after 20s\n%s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
