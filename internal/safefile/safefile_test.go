package safefile

import (
	"bytes"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestRead reads each kind of path a configuration might name: regular
// files up to the cap are read, everything else fails at once with an
// error that says what the path is (a FIFO with no writer must not block,
// /dev/zero must not be read until memory runs out).
func TestRead(t *testing.T) {
	dir := t.TempDir()
	const limit = 64
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	regular := write("regular", []byte("hello\n"))
	empty := write("empty", nil)
	atCap := write("at-cap", bytes.Repeat([]byte("a"), limit))
	overCap := write("over-cap", bytes.Repeat([]byte("a"), limit+1))
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	link := func(name, target string) string {
		p := filepath.Join(dir, name)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	toRegular := link("to-regular", regular)
	toZero := link("to-zero", "/dev/zero")
	dangling := link("dangling", filepath.Join(dir, "nothing"))

	for _, tc := range []struct {
		path    string
		want    string // contents when it reads
		is      error  // what the error wraps
		errText string // a part of the error's text
	}{
		{path: regular, want: "hello\n"},
		{path: empty, want: ""},
		{path: atCap, want: strings.Repeat("a", limit)},
		{path: toRegular, want: "hello\n"},
		{path: overCap, is: ErrTooLarge, errText: "more than the 64 bytes limit"},
		{path: dir, is: ErrNotRegular, errText: "(a directory)"},
		{path: fifo, is: ErrNotRegular, errText: "(a named pipe (FIFO))"},
		// open(2) refuses a socket itself.
		{path: sock, is: syscall.ENXIO},
		{path: "/dev/zero", is: ErrNotRegular, errText: "(a character device)"},
		{path: "/dev/urandom", is: ErrNotRegular, errText: "(a character device)"},
		{path: toZero, is: ErrNotRegular, errText: "(a character device)"},
		{path: dangling, is: syscall.ENOENT, errText: "no such file or directory"},
		{path: filepath.Join(dir, "missing"), is: syscall.ENOENT},
		{path: filepath.Join(regular, "below"), is: syscall.ENOTDIR},
	} {
		got, err := Read(tc.path, limit)
		if tc.is == nil {
			if err != nil || string(got) != tc.want {
				t.Errorf("Read(%s) = %q, %v; want %q", tc.path, got, err, tc.want)
			}
			continue
		}
		var pe *fs.PathError
		if !errors.Is(err, tc.is) || !errors.As(err, &pe) || pe.Path != tc.path || !strings.Contains(err.Error(), tc.errText) {
			t.Errorf("Read(%s) = %q, %v; want a *fs.PathError naming the path, wrapping %v, containing %q",
				tc.path, got, err, tc.is, tc.errText)
		}
	}
}

// TestReadStat returns the mode of the file read, for the permission
// warnings on keys.
func TestReadStat(t *testing.T) {
	p := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(p, []byte("k"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o640); err != nil {
		t.Fatal(err)
	}
	_, fi, err := ReadStat(p, MaxPEM)
	if err != nil || fi.Mode().Perm() != 0o640 || !TooOpen(fi.Mode()) {
		t.Fatalf("ReadStat = %v, %v; want mode 0640, too open", fi, err)
	}
	if TooOpen(0o600) || TooOpen(0o400) || !TooOpen(0o604) || !TooOpen(0o620) {
		t.Error("TooOpen: want false for 0600 and 0400, true for 0604 and 0620")
	}
}

func TestSize(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{MaxPEM, "16 MiB"}, {MaxConfig, "4 MiB"}, {MaxPID, "4 KiB"}, {100, "100 bytes"}, {1<<20 + 1, "1048577 bytes"},
	} {
		if got := Size(tc.n); got != tc.want {
			t.Errorf("Size(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}
