package engine

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// TestUnixNginxDiff runs NGINX (when installed) and tlsrelay on the same
// unix domain socket configuration and compares what each does: the
// listening socket's mode, the access-log line of a unix client
// ($remote_addr, $remote_port, $server_addr, $server_port,
// $upstream_addr), the PROXY header sent to a unix upstream, and that the
// socket file is gone after a graceful stop.
func TestUnixNginxDiff(t *testing.T) {
	testutil.NginxPath(t)
	sd := shortDir(t)
	// NGINX's workers run as another user: they must reach the upstream.
	if err := os.Chmod(sd, 0o755); err != nil {
		t.Fatal(err)
	}
	up := filepath.Join(sd, "up.sock")
	got := plainUnixUpstream(t, up)
	if err := os.Chmod(up, 0o666); err != nil {
		t.Fatal(err)
	}
	streamConf := func(sock, log string) string {
		return "stream {\n    log_format u '$remote_addr|$remote_port|$server_addr|$server_port|$upstream_addr|$status';\n" +
			"    server {\n        listen unix:" + sock + ";\n        proxy_pass unix:" + up + ";\n        proxy_protocol on;\n" +
			"        access_log " + log + " u;\n    }\n}\n"
	}
	type outcome struct {
		mode   os.FileMode
		line   string
		header string
		gone   bool
	}
	// session connects a unix client to sock and records what happened,
	// with sock in the results written as SOCK.
	session := func(t *testing.T, sock, log string) outcome {
		t.Helper()
		var o outcome
		fi, err := os.Stat(sock)
		if err != nil {
			t.Fatal(err)
		}
		o.mode = fi.Mode()
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("hello\n"))
		select {
		case s := <-got:
			o.header = s
		case <-time.After(10 * time.Second):
			t.Fatal("nothing reached the upstream")
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		var b [1]byte
		c.Read(b[:])
		c.Close()
		o.line = strings.ReplaceAll(readLines(t, log, 1)[0], sock, "SOCK")
		return o
	}

	// NGINX.
	nd := t.TempDir()
	nsock, nlog := filepath.Join(sd, "n.sock"), filepath.Join(nd, "access.log")
	ng := testutil.StartNginx(t, nd, testutil.NginxConf{Main: "worker_processes 1;\nmaster_process on;", Stream: streamConf(nsock, nlog)})
	cmd, done := ng.Cmd, ng.Exited
	testutil.WaitFor(t, "NGINX's socket", 10*time.Second, func() bool {
		c, err := net.Dial("unix", nsock)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	// The probe connection above is a session too: let it be logged.
	select {
	case <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("NGINX did not proxy the probe connection")
	}
	readLines(t, nlog, 1)
	os.Truncate(nlog, 0)
	want := session(t, nsock, nlog)
	cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("NGINX did not stop")
	}
	_, err := os.Lstat(nsock)
	want.gone = os.IsNotExist(err)

	// tlsrelay.
	tsock := filepath.Join(sd, "t.sock")
	dir := t.TempDir()
	tlog := filepath.Join(dir, "access.log")
	tb := startEngine(t, dir, streamConf(tsock, tlog))
	have := session(t, tsock, tlog)
	stopEngine(t, tb)
	_, err = os.Lstat(tsock)
	have.gone = os.IsNotExist(err)

	t.Logf("NGINX: socket %v, access log %q, upstream got %q, file deleted at quit: %v", want.mode, want.line, want.header, want.gone)
	if have != want {
		t.Errorf("tlsrelay: %+v\nNGINX:    %+v", have, want)
	}
}
