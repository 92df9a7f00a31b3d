package engine

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"
)

// deadPID returns the pid of a process that has exited and been reaped.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skipf("cannot run true: %v", err)
	}
	return cmd.Process.Pid
}

// livePID returns the pid of a process that runs until the test ends.
func livePID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot run sleep: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd.Process.Pid
}

// TestRemoveStaleDoors: only a door directory of this user, mode 0700,
// whose process is gone and whose socket nobody listens on (or, empty,
// older than a minute) is removed; a live process's, another program's,
// a link, or one with anything else in it is left alone.
func TestRemoveStaleDoors(t *testing.T) {
	tmp := t.TempDir()
	self := os.Getpid()
	dead, live := deadPID(t), livePID(t)
	type door int
	const (
		none      door = iota
		stale          // a socket nobody listens on
		listening      // a socket a process listens on
	)
	mk := func(name string, mode os.FileMode, d door, extra bool) string {
		dir := filepath.Join(tmp, name)
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if d != none {
			ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "door"), Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			if d == stale {
				ln.SetUnlinkOnClose(false)
				ln.Close()
			} else {
				t.Cleanup(func() { ln.Close() })
			}
		}
		if extra {
			if err := os.WriteFile(filepath.Join(dir, "data"), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	old := time.Now().Add(-2 * doorEmptyAge)
	name := func(pid int, rand string) string { return "tlsrelay-" + strconv.Itoa(pid) + "-" + rand }
	for _, tt := range []struct {
		name   string
		mode   os.FileMode
		door   door
		extra  bool
		mtime  time.Time
		remove bool
	}{
		{name: name(dead, "1"), mode: 0o700, door: stale, remove: true},
		{name: name(dead, "2"), mode: 0o700, door: none, mtime: old, remove: true},
		{name: name(dead, "3"), mode: 0o700, door: none},                   // empty and new: maybe being made
		{name: name(dead, "4"), mode: 0o700, door: listening},              // a live process in another pid namespace
		{name: name(dead, "5"), mode: 0o700, door: stale, extra: true},     // something else in it
		{name: name(dead, "6"), mode: 0o755, door: stale},                  // not as MkdirTemp makes it
		{name: name(live, "7"), mode: 0o700, door: stale},                  // its process lives
		{name: name(self, "8"), mode: 0o700, door: stale},                  // this process
		{name: "tlsrelay-1234567", mode: 0o700, door: stale, remove: true}, // the older name: the socket decides
		{name: "tlsrelay-7654321", mode: 0o700, door: listening},
		{name: "tlsrelay-7654322", mode: 0o700, door: none, mtime: old}, // older name, empty: pid unknown
		{name: "tlsrelay-bench", mode: 0o700, door: stale},              // another program's
		{name: "tlsrelay-" + strconv.Itoa(dead) + "-x9", mode: 0o700, door: stale},
	} {
		dir := mk(tt.name, tt.mode, tt.door, tt.extra)
		if !tt.mtime.IsZero() {
			if err := os.Chtimes(dir, tt.mtime, tt.mtime); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A link to a stale door directory elsewhere: neither it nor its
	// target is touched.
	target := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.Mkdir(target, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(tmp, name(dead, "99"))); err != nil {
		t.Fatal(err)
	}

	got := removeStaleDoors(tmp, self, time.Now())
	want := []string{filepath.Join(tmp, "tlsrelay-1234567"), filepath.Join(tmp, name(dead, "1")), filepath.Join(tmp, name(dead, "2"))}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("removed %q\nwant    %q", got, want)
	}
	for _, dir := range want {
		if _, err := os.Lstat(dir); !os.IsNotExist(err) {
			t.Errorf("%s is still there: %v", dir, err)
		}
	}
	ents, _ := os.ReadDir(tmp)
	if len(ents) != 14-len(want) {
		t.Errorf("%d entries left, want %d", len(ents), 14-len(want))
	}
	if _, err := os.Stat(target); err != nil {
		t.Errorf("the link's target: %v", err)
	}
}
