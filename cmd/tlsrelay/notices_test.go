package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// TestVersionStamp: -V names the commit however the binary was built: the
// Makefile's stamp wins; a build with neither a stamp nor version control
// information says so.
func TestVersionStamp(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	for _, tc := range []struct {
		name, ldflags, want string
	}{
		{"stamped", "-X main.commit=0123456789ab", "commit: 0123456789ab\n"},
		{"plain", "", "commit: unknown (built without version control information"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin := filepath.Join(t.TempDir(), "tlsrelay")
			if out, err := exec.Command("go", "build", "-buildvcs=false", "-ldflags", tc.ldflags, "-o", bin, ".").CombinedOutput(); err != nil {
				t.Fatalf("go build: %v\n%s", err, out)
			}
			out, err := exec.Command(bin, "-V").CombinedOutput()
			if err != nil || !strings.Contains(string(out), tc.want) {
				t.Errorf("-V: %v\n%s\nwant %q", err, out, tc.want)
			}
		})
	}
}

// TestStartAndExitNotices: at notice, the start says what is served and
// within which limits, the exit is said, and gnet's own lines (its door,
// a socket the user never configured) are not there.
func TestStartAndExitNotices(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "t.conf")
	listen := testutil.FreeAddr(t)
	src := "error_log stderr notice;\nworker_processes 2;\nstream { server { listen " + listen + "; proxy_pass " + testutil.FreeAddr(t) + "; } }\n"
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", path)
	stderr := &testutil.Buffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	testutil.WaitFor(t, "the start notice", 20*time.Second, func() bool { return strings.Contains(stderr.String(), " started, pid ") })
	line := stderr.String()
	for _, want := range []string{"[notice]", "tlsrelay/", "2 event loops", "listening on " + listen,
		"worker_connections derived from the descriptor limit (", "per loop), descriptor limit "} {
		if !strings.Contains(line, want) {
			t.Errorf("start notice lacks %q:\n%s", want, line)
		}
	}
	if strings.Contains(line, "gnet") {
		t.Errorf("gnet's own lines at notice:\n%s", line)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("no exit 20 s after SIGTERM:\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "[notice] ") || !strings.HasSuffix(strings.TrimSpace(stderr.String()), "exiting") {
		t.Errorf("no exit notice last:\n%s", stderr.String())
	}
}
