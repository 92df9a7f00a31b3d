package testutil

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// NginxStreamModule is the stream module as Debian packages it
// (libnginx-mod-stream); builds with the module compiled in have no file.
const NginxStreamModule = "/usr/lib/nginx/modules/ngx_stream_module.so"

// NginxPath returns the nginx binary (NeedProgram: skipped without it, a
// failure under CI).
func NginxPath(t testing.TB) string {
	t.Helper()
	return NeedProgram(t, "nginx", "nginx", "/usr/sbin/nginx")
}

// NginxConf is what StartNginx writes into nginx.conf, around the lines
// every test's NGINX has: the stream module loaded (when it is a module),
// daemon off, its pid file and error log in the test's directory.
type NginxConf struct {
	// Main holds main-context directives: worker_processes,
	// master_process, worker_rlimit_nofile.
	Main string
	// ErrorLevel is the error log's level; "" is info.
	ErrorLevel string
	// Events is the events block; "" is "events { }".
	Events string
	// Stream is the stream block.
	Stream string
	// Probe, if set, is an address StartNginx waits (at most 10 s) to
	// accept a connection before it returns.
	Probe string
}

// Nginx is an NGINX process that StartNginx started.
type Nginx struct {
	// Cmd is the process (the master, or the only process).
	Cmd *exec.Cmd
	// ErrLog is the path of its error log.
	ErrLog string
	// Exited is closed once the process has exited.
	Exited chan struct{}
}

// Log returns the error log's content.
func (n *Nginx) Log() string {
	b, _ := os.ReadFile(n.ErrLog)
	return string(b)
}

// Stop ends NGINX (SIGTERM, then SIGKILL after 5 s) and waits until it
// has exited. It may be called any number of times; StartNginx calls it
// when the test ends.
func (n *Nginx) Stop() {
	select {
	case <-n.Exited:
		return
	default:
	}
	n.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.Exited:
	case <-time.After(5 * time.Second):
		n.Cmd.Process.Kill()
		<-n.Exited
	}
}

// StartNginx runs nginx (NginxPath) in the foreground in dir with the
// configuration c, and stops it when the test ends. With c.Probe it
// returns once that address accepts; it fails the test if NGINX exits
// first, with its error log.
func StartNginx(t testing.TB, dir string, c NginxConf) *Nginx {
	t.Helper()
	path := NginxPath(t)
	errLog := filepath.Join(dir, "error.log")
	level := c.ErrorLevel
	if level == "" {
		level = "info"
	}
	events := c.Events
	if events == "" {
		events = "events { }"
	}
	var b strings.Builder
	if _, err := os.Stat(NginxStreamModule); err == nil {
		fmt.Fprintf(&b, "load_module %s;\n", NginxStreamModule)
	}
	fmt.Fprintf(&b, "daemon off;\npid %s;\nerror_log %s %s;\n%s\n%s\n%s\n",
		filepath.Join(dir, "nginx.pid"), errLog, level, c.Main, events, c.Stream)
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o600); err != nil {
		t.Fatalf("writing nginx.conf: %v", err)
	}
	var out strings.Builder
	cmd := exec.Command(path, "-p", dir, "-e", errLog, "-c", conf)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting nginx: %v", err)
	}
	n := &Nginx{Cmd: cmd, ErrLog: errLog, Exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(n.Exited)
	}()
	t.Cleanup(func() {
		n.Stop()
		if t.Failed() {
			t.Logf("nginx output:\n%s\nerror log:\n%s", out.String(), n.Log())
		}
	})
	if c.Probe != "" {
		waitAccepting(t, n, c.Probe)
	}
	return n
}

// waitAccepting waits (at most 10 s) until addr accepts a connection; it
// fails the test if n exits first.
func waitAccepting(t testing.TB, n *Nginx, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-n.Exited:
			t.Fatalf("nginx exited before listening on %s:\n%s", addr, n.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx did not listen on %s within 10 s: %v\n%s", addr, err, n.Log())
		}
		// A bounded poll for a listener in another process, which
		// reports no event the test could wait on.
		time.Sleep(20 * time.Millisecond)
	}
}
