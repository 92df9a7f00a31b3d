package tlsbridge

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/tlsrelay/tlsrelay/internal/pki"
)

// lockedBuffer is a key log writer for the test server.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// take returns the lines written since the last call, sorted (client and
// server log the same secrets, not in the same order).
func (b *lockedBuffer) take() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	b.buf.Reset()
	return sorted(strings.Split(strings.TrimSuffix(s, "\n"), "\n"))
}

func sorted(lines []string) []string {
	lines = slices.Clone(lines)
	slices.Sort(lines)
	return lines
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

// TestKeyLog: proxy_ssl_key_log writes the secrets of each handshake in
// the NSS format, the same lines the upstream logs; two policies naming one
// file share it; Reopen follows a rename; Close drops lines without failing
// handshakes.
func TestKeyLog(t *testing.T) {
	set := mustSet(t, pki.ECDSAP256, 0)
	f := pkiFiles(t, set)
	serverLog := &lockedBuffer{}
	srv := startServer(t, serverWith(set, func(c *tls.Config) { c.KeyLogWriter = serverLog }))
	target := Target{Addr: srv.addr, Host: "localhost"}
	dir := t.TempDir()
	path := filepath.Join(dir, "keys.log")
	if err := os.WriteFile(path, []byte("# kept\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	files := NewKeyLogFiles()
	t.Cleanup(func() { files.Close() })
	base := PolicyConfig{Verify: true, VerifyDepth: 1, TrustedCertificate: f.CA, KeyLog: path, KeyLogFiles: files}
	p13 := mustPolicy(t, base, nil)
	pc12 := base
	pc12.KeyLog = filepath.Join(dir, ".", "keys.log")
	pc12.Protocols = []string{"TLSv1.2"}
	p12 := mustPolicy(t, pc12, nil)
	if p13.keyLog == nil || p13.keyLog != p12.keyLog {
		t.Fatal("two policies naming one key log file do not share its writer")
	}

	dial := func(p *Policy) {
		t.Helper()
		if _, err := dialOnce(t, p, target, Vars{}, nil); err != nil {
			t.Fatal(err)
		}
		if sc := srv.next(t); sc.err != nil {
			t.Fatal(sc.err)
		}
	}
	dial(p13)
	dial(p12)
	got := readLines(t, path)
	if len(got) == 0 || got[0] != "# kept" {
		t.Fatalf("the key log's earlier content was not kept: %q", got)
	}
	want := serverLog.take()
	if strings.Join(sorted(got[1:]), "\n") != strings.Join(want, "\n") {
		t.Fatalf("key log =\n%s\nwant (the upstream's own key log)\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	labels := map[string]bool{}
	for _, l := range got[1:] {
		labels[strings.Fields(l)[0]] = true
	}
	for _, l := range []string{"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
		"CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0", "CLIENT_RANDOM"} {
		if !labels[l] {
			t.Errorf("no %s line (TLS 1.3 and 1.2 handshakes were made): %v", l, labels)
		}
	}

	// A file tlsrelay creates is readable by its owner only, and is
	// created by the first line, not by loading the policy (-t).
	fresh := filepath.Join(dir, "fresh.log")
	pf := base
	pf.KeyLog = fresh
	pfresh := mustPolicy(t, pf, nil)
	if _, err := os.Lstat(fresh); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("loading a policy created its key log: %v", err)
	}
	dial(pfresh)
	serverLog.take()
	if fi, err := os.Stat(fresh); err != nil || fi.Mode().Perm() != 0o600 || len(readLines(t, fresh)) == 0 {
		t.Fatalf("new key log file after a handshake: %v, mode %v", err, fi.Mode())
	}

	// logrotate: rename, then Reopen.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := files.Reopen(); err != nil {
		t.Fatal(err)
	}
	dial(p13)
	if got, want := sorted(readLines(t, path)), serverLog.take(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("after Reopen the new file holds\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if n := len(readLines(t, path+".1")); n != len(got) {
		t.Fatalf("the rotated file changed: %d lines, had %d", n, len(got))
	}

	// Closed: handshakes go on, nothing is written.
	if err := files.Close(); err != nil {
		t.Fatal(err)
	}
	before := len(readLines(t, path))
	dial(p13)
	if n := len(readLines(t, path)); n != before {
		t.Fatalf("key log written after Close: %d lines, had %d", n, before)
	}
	if err := files.LastError(); err != nil {
		t.Fatalf("LastError = %v", err)
	}
}

// TestKeyLogConfig: opening errors are ConfigErrors for proxy_ssl_key_log.
func TestKeyLogConfig(t *testing.T) {
	files := NewKeyLogFiles()
	t.Cleanup(func() { files.Close() })
	tests := []struct {
		name string
		pc   PolicyConfig
		want string
	}{
		{"no directory", PolicyConfig{KeyLog: "/nonexistent/dir/keys.log", KeyLogFiles: files},
			`opening proxy_ssl_key_log "/nonexistent/dir/keys.log": open /nonexistent/dir/keys.log: no such file or directory`},
		{"no set", PolicyConfig{KeyLog: "/tmp/keys.log"}, `proxy_ssl_key_log "/tmp/keys.log": no KeyLogFiles set to open it with`},
		{"a directory", PolicyConfig{KeyLog: t.TempDir(), KeyLogFiles: files}, "is a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewPolicy(tt.pc, nil)
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Directive != "proxy_ssl_key_log" || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewPolicy error = %v, want a proxy_ssl_key_log ConfigError saying %q", err, tt.want)
			}
		})
	}
	// Without proxy_ssl_key_log the set is not needed and nothing is logged.
	p := mustPolicy(t, PolicyConfig{}, nil)
	cfg, err := p.ClientConfig(Target{Addr: "127.0.0.1:1"}, Vars{})
	if err != nil || cfg.KeyLogWriter != nil {
		t.Fatalf("config without key log: writer %v, err %v", cfg.KeyLogWriter, err)
	}
}

// TestKeyLogFileSafety: the key log is handled as OpenSSH handles a
// private key. A symbolic link is refused and its target never written; an
// existing file open to group or others is refused and left as it was;
// a FIFO or directory is refused at once; opening (what -t does) creates
// nothing; a link planted before the first line makes that line dropped,
// not written through.
func TestKeyLogFileSafety(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("# old\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	target := write("target", 0o600)
	link := filepath.Join(dir, "link.log")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo.log")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		path string
		want string // "": opens
		mode os.FileMode
	}{
		{path: write("ok.log", 0o600)},
		{path: write("ro-owner.log", 0o400), want: "permission denied"},
		{path: write("world.log", 0o644), want: "permissions 0644 are too open: group or others could read the TLS secrets", mode: 0o644},
		{path: write("group.log", 0o640), want: "permissions 0640 are too open", mode: 0o640},
		{path: write("group-w.log", 0o620), want: "permissions 0620 are too open", mode: 0o620},
		{path: link, want: "it is a symbolic link: TLS secrets are not written through one"},
		{path: fifo, want: "it is a named pipe (FIFO), not a regular file"},
		{path: dir, want: "is a directory"},
		{path: filepath.Join(dir, "missing", "k.log"), want: "no such file or directory"},
	} {
		if os.Geteuid() == 0 && strings.Contains(tt.path, "ro-owner") {
			continue // root writes any file
		}
		files := NewKeyLogFiles()
		w, err := files.Open(tt.path)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("Open(%s): %v", tt.path, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), tt.path)):
			t.Errorf("Open(%s) = %v, want an error naming the file and saying %q", tt.path, err, tt.want)
		case tt.want == "":
			w.Write([]byte("line\n"))
		}
		files.Close()
		if tt.mode != 0 {
			if fi, err := os.Stat(tt.path); err != nil || fi.Mode().Perm() != tt.mode {
				t.Errorf("%s: mode changed to %v (%v), want it left %04o", tt.path, fi.Mode(), err, tt.mode)
			}
		}
	}
	if got := readLines(t, target); len(got) != 1 {
		t.Errorf("the symbolic link's target was written: %q", got)
	}
	if got := readLines(t, filepath.Join(dir, "ok.log")); len(got) != 2 || got[1] != "line" {
		t.Errorf("ok.log = %q, want its old line and the new one", got)
	}

	// Open creates nothing; a link planted before the first line is not
	// followed: the line is dropped and the error kept.
	later := filepath.Join(dir, "later.log")
	files := NewKeyLogFiles()
	defer files.Close()
	w, err := files.Open(later)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(later); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Open created the key log: %v", err)
	}
	if err := os.Symlink(target, later); err != nil {
		t.Fatal(err)
	}
	if n, err := w.Write([]byte("SECRET\n")); n != 7 || err != nil {
		t.Fatalf("Write = %d, %v; want the line reported written", n, err)
	}
	if got := readLines(t, target); len(got) != 1 {
		t.Errorf("the secret went through the planted link: %q", got)
	}
	if err := files.LastError(); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("LastError = %v, want the refused link", err)
	}
}
