package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// listTree returns every path under dir with its mode and size, to tell
// whether a command changed anything there.
func listTree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		out = append(out, path+" "+fi.Mode().String()+" "+strings.Repeat("#", int(min(fi.Size(), 64))))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// TestCheckFiles drives -t as a user would: it creates and changes no
// file (the key log included), warns about a private key others can read
// and about metrics on every interface, refuses a world-readable key log,
// and finishes at once on include /dev/zero, a FIFO or
// proxy_ssl_trusted_certificate /dev/urandom, naming the file and line.
func TestCheckFiles(t *testing.T) {
	dir := t.TempDir()
	crt, key, ca := certs(t, dir)
	keyLog := filepath.Join(dir, "keys.log")
	conf := filepath.Join(dir, "t.conf")
	body := func(extra string) string {
		return "pid run.pid;\nmetrics_listen *:9100;\nstream {\n    server {\n        listen 127.0.0.1:1;\n" +
			"        proxy_pass 127.0.0.1:2;\n        proxy_ssl on;\n        proxy_ssl_certificate " + crt + ";\n" +
			"        proxy_ssl_certificate_key " + key + ";\n        proxy_ssl_verify on;\n" +
			"        proxy_ssl_trusted_certificate " + ca + ";\n        proxy_ssl_key_log " + keyLog + ";\n" +
			"        error_log err.log;\n" + extra + "    }\n}\n"
	}
	writeFile(t, conf, body(""))
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	before := listTree(t, dir)
	code, _, stderr := runCmd("-t", "-p", dir, "-c", conf)
	if code != 0 {
		t.Fatalf("-t: %d\n%s", code, stderr)
	}
	for _, want := range []string{
		`[warn] permissions 0644 for the "proxy_ssl_certificate_key" file "` + key + `" are too open: group or others can access it (chmod 600 it) in ` + conf + ":9",
		`[warn] "metrics_listen" *:9100 exposes the metrics endpoint, status page and api on every interface; listen on 127.0.0.1 or a private address unless it is firewalled in ` + conf + ":2",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("-t said\n%s\nwant a line with\n%s", stderr, want)
		}
	}
	if after := listTree(t, dir); !slices.Equal(before, after) {
		t.Errorf("-t changed the tree:\nbefore %q\nafter  %q", before, after)
	}

	// An existing key log others can read is refused, at its directive,
	// and left as it was.
	writeFile(t, keyLog, "")
	if err := os.Chmod(keyLog, 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runCmd("-t", "-p", dir, "-c", conf)
	if want := `opening proxy_ssl_key_log "` + keyLog + `": permissions 0644 are too open`; code != 1 ||
		!strings.Contains(stderr, want) || !strings.Contains(stderr, " in "+conf+":12\n") {
		t.Errorf("-t with a 0644 key log: %d\n%s\nwant 1 and %q in %s:12", code, stderr, want, conf)
	}
	if fi, err := os.Stat(keyLog); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("the key log's mode changed: %v %v", fi, err)
	}
	os.Remove(keyLog)

	fifo := filepath.Join(dir, "fifo.conf")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ extra, want string }{
		{"        include /dev/zero;\n", `"include" file "/dev/zero" cannot be read: not a regular file (a character device) in ` + conf + ":14"},
		{"        include " + fifo + ";\n", `"include" file "` + fifo + `" cannot be read: not a regular file (a named pipe (FIFO)) in ` + conf + ":14"},
	} {
		writeFile(t, conf, body(tc.extra))
		code, _, stderr := runCmd("-t", "-p", dir, "-c", conf)
		if code != 1 || !strings.Contains(stderr, tc.want) {
			t.Errorf("-t: %d\n%s\nwant 1 and %q", code, stderr, tc.want)
		}
	}
	writeFile(t, conf, strings.Replace(body(""), ca, "/dev/urandom", 1))
	code, _, stderr = runCmd("-t", "-p", dir, "-c", conf)
	if want := `cannot load trusted certificate "/dev/urandom": not a regular file (a character device) in ` + conf + ":11"; code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("-t: %d\n%s\nwant 1 and %q", code, stderr, want)
	}
}
