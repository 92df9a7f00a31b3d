package errlog

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestLogf: NGINX's line format, the connection number when there is one,
// and nothing below the level.
func TestLogf(t *testing.T) {
	var b bytes.Buffer
	l := New(&b, LevelWarn)
	l.Logf(LevelInfo, 0, "not written")
	l.Logf(LevelError, 17, "connect() failed (%d: %s)", 111, "Connection refused")
	l.Logf(LevelWarn, 0, "no connection")
	pid := strconv.Itoa(os.Getpid())
	want := regexp.MustCompile(`^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[error\] ` + pid + `#0: \*17 connect\(\) failed \(111: Connection refused\)\n` +
		`\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[warn\] ` + pid + `#0: no connection\n$`)
	if !want.MatchString(b.String()) {
		t.Errorf("log:\n%s", b.String())
	}
	if l.Enabled(LevelInfo) || !l.Enabled(LevelWarn) || (*Log)(nil).Enabled(LevelEmerg) {
		t.Error("Enabled disagrees with the level")
	}
	l.SetLevel(LevelDebug)
	if !l.Enabled(LevelDebug) {
		t.Error("SetLevel(LevelDebug) left debug off")
	}
}

func TestParseLevel(t *testing.T) {
	for i, name := range []string{"debug", "info", "notice", "warn", "error", "crit", "alert", "emerg"} {
		lv, ok := ParseLevel(name)
		if !ok || lv != Level(i) || lv.String() != name {
			t.Errorf("ParseLevel(%q) = %v, %v", name, lv, ok)
		}
	}
	if lv, ok := ParseLevel(""); !ok || lv != LevelError {
		t.Errorf(`ParseLevel("") = %v, %v; want error, NGINX's default`, lv, ok)
	}
	if _, ok := ParseLevel("verbose"); ok {
		t.Error(`ParseLevel("verbose") succeeded`)
	}
}

// TestReopen: after the file is renamed, Reopen sends the next lines to a
// new file by the same path; Reconfigure points the log elsewhere.
func TestReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "error.log")
	l, err := Open(path, LevelInfo)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.Path() != path {
		t.Errorf("Path = %q, want %q", l.Path(), path)
	}
	l.Logf(LevelInfo, 0, "before")
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	l.Logf(LevelInfo, 0, "renamed")
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	l.Logf(LevelInfo, 0, "after")
	other := filepath.Join(dir, "other.log")
	if err := l.Reconfigure(other, LevelInfo); err != nil {
		t.Fatal(err)
	}
	l.Logf(LevelInfo, 0, "elsewhere")
	for file, want := range map[string][]string{path + ".1": {"before", "renamed"}, path: {"after"}, other: {"elsewhere"}} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			got = append(got, line[strings.LastIndex(line, " ")+1:])
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("%s holds %q, want %q", filepath.Base(file), got, want)
		}
	}
	if err := New(&bytes.Buffer{}, LevelInfo).Reopen(); err != nil {
		t.Errorf("Reopen of a log without a file: %v", err)
	}
}
