package engine

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// nginxPath returns the nginx binary (testutil.NeedProgram: skips without
// it, fails under CI).
func nginxPath(t *testing.T) string {
	t.Helper()
	return testutil.NeedProgram(t, "nginx", "nginx", "/usr/sbin/nginx")
}

// nginxRun is an NGINX started by startNginx.
type nginxRun struct {
	cmd *exec.Cmd
	// exited is closed once the process has exited.
	exited chan struct{}
	// ErrLog is its error log.
	ErrLog string
}

// startNginx runs nginx in the foreground, a master and workers workers,
// in the directory nd, with the given events and stream blocks (and the
// stream module loaded when it is a module), and stops it (SIGTERM, then
// SIGKILL after 5 s) when the test ends unless the test stopped it first.
func startNginx(t *testing.T, path, nd string, workers int, level, events, stream string) *nginxRun {
	t.Helper()
	errLog := filepath.Join(nd, "error.log")
	var b strings.Builder
	if mod := "/usr/lib/nginx/modules/ngx_stream_module.so"; fileExists(mod) {
		fmt.Fprintf(&b, "load_module %s;\n", mod)
	}
	fmt.Fprintf(&b, "worker_processes %d;\ndaemon off;\nmaster_process on;\npid %s/nginx.pid;\nerror_log %s %s;\n%s\n%s", workers, nd, errLog, level, events, stream)
	conf := filepath.Join(nd, "nginx.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, "-p", nd, "-e", errLog, "-c", conf)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n := &nginxRun{cmd: cmd, exited: make(chan struct{}), ErrLog: errLog}
	go func() {
		cmd.Wait()
		close(n.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-n.exited
		}
	})
	return n
}
