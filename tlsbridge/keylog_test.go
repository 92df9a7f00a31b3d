package tlsbridge

import (
	"bytes"
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
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

	// A file tlsrelay creates is readable by its owner only.
	fresh := filepath.Join(dir, "fresh.log")
	pf := base
	pf.KeyLog = fresh
	mustPolicy(t, pf, nil)
	if fi, err := os.Stat(fresh); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("new key log file: %v, mode %v", err, fi.Mode())
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
