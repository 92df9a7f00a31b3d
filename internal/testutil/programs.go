// Package testutil holds what the tests of several packages share. It
// imports package testing: only tests may import it.
package testutil

import (
	"os"
	"os/exec"
	"testing"

	"github.com/tlsrelay/tlsrelay/internal/netns"
)

// NeedProgram returns the path of a program a test runs (the program a
// differential test compares against, or a tool it reads the system
// with): looked up in PATH, then at the fallback paths (nginx lives in
// /usr/sbin, often not in a user's PATH). Without it the test is skipped
// on a developer's machine; under CI (CI=true) it fails, since .ci/run
// installs every such program, and a differential test that skips there
// would pass without comparing anything. pkg names the Debian package that
// has the program, for the message.
func NeedProgram(t testing.TB, name, pkg string, fallbacks ...string) string {
	t.Helper()
	if path, err := exec.LookPath(name); err == nil {
		return path
	}
	for _, p := range fallbacks {
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed, and CI=true: .ci/run must install it (Debian package %s)", name, pkg)
		return ""
	}
	t.Skipf("%s is not installed (Debian package %s; .ci/run installs it)", name, pkg)
	return ""
}

// NeedFile is NeedProgram for a file a test needs (NGINX's stream module):
// skipped without it, a failure under CI.
func NeedFile(t testing.TB, path, pkg string) {
	t.Helper()
	if _, err := os.Stat(path); err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is missing, and CI=true: .ci/run must install it (Debian package %s)", path, pkg)
		return
	}
	t.Skipf("%s is missing (Debian package %s; .ci/run installs it)", path, pkg)
}

// NeedNetns skips the test when this process cannot make a network
// namespace (netns.Available says why), and fails it instead when running
// as root under CI=true, where .ci/run gives it one.
func NeedNetns(t testing.TB) {
	t.Helper()
	err := netns.Available()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" && os.Geteuid() == 0 {
		t.Fatalf("CI as root needs a network namespace: %v", err)
	}
	t.Skipf("no network namespace: %v", err)
}
