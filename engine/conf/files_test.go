package conf

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestUnreadableFiles: an include or TLS file that is a device, a FIFO, a
// directory or larger than its cap fails at once (no read of /dev/zero
// until memory runs out, no wait for a FIFO's writer) with the file, why,
// the cap, and the position of the directive that names it.
func TestUnreadableFiles(t *testing.T) {
	dir, _ := writePKI(t)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.conf")
	if err := os.WriteFile(big, bytes.Repeat([]byte("#\n"), 2<<20+1), 0o644); err != nil {
		t.Fatal(err)
	}
	bigPEM := filepath.Join(dir, "big.pem")
	if err := os.WriteFile(bigPEM, bytes.Repeat([]byte("#"), 16<<20+1), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/zero", filepath.Join(dir, "zero-link.pem")); err != nil {
		t.Fatal(err)
	}
	ssl := func(s string) string {
		return "stream {\nserver { listen 80; proxy_pass 127.0.0.1:1; proxy_ssl on;\n" + s + "\n} }\n"
	}
	for _, tt := range []struct {
		name, src string
		line      int
		want      string
	}{
		{"include /dev/zero", "include /dev/zero;\n", 1,
			`"include" file "/dev/zero" cannot be read: not a regular file (a character device)`},
		{"include FIFO", "\ninclude fifo;\n", 2,
			`"include" file "DIR/fifo" cannot be read: not a regular file (a named pipe (FIFO))`},
		{"include directory", "include .;\n", 1,
			`"include" file "DIR" cannot be read: not a regular file (a directory)`},
		{"include glob reaching a FIFO", "include fif*;\n", 1,
			`"include" file "DIR/fifo" cannot be read: not a regular file (a named pipe (FIFO))`},
		{"include over the cap", "include big.conf;\n", 1,
			`"include" file "DIR/big.conf" cannot be read: file too large: more than the 4 MiB limit`},
		{"trusted /dev/urandom", ssl("proxy_ssl_verify on; proxy_ssl_trusted_certificate /dev/urandom;"), 3,
			`cannot load trusted certificate "/dev/urandom": not a regular file (a character device)`},
		{"CRL FIFO", ssl("proxy_ssl_verify on; proxy_ssl_trusted_certificate ca.pem; proxy_ssl_crl fifo;"), 3,
			`cannot load CRL "DIR/fifo": not a regular file (a named pipe (FIFO))`},
		{"certificate through a link to /dev/zero", ssl("proxy_ssl_certificate zero-link.pem; proxy_ssl_certificate_key client.key;"), 3,
			`cannot load certificate "DIR/zero-link.pem": not a regular file (a character device)`},
		{"key /dev/zero", ssl("proxy_ssl_certificate client.pem; proxy_ssl_certificate_key /dev/zero;"), 3,
			`cannot load certificate key "/dev/zero": not a regular file (a character device)`},
		{"password file FIFO", ssl("proxy_ssl_certificate client.pem; proxy_ssl_certificate_key encrypted.key; proxy_ssl_password_file fifo;"), 3,
			`cannot load certificate key "DIR/encrypted.key": reading proxy_ssl_password_file: not a regular file (a named pipe (FIFO))`},
		{"trusted over the cap", ssl("proxy_ssl_verify on; proxy_ssl_trusted_certificate big.pem;"), 3,
			`cannot load trusted certificate "DIR/big.pem": file too large: more than the 16 MiB limit`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			name := filepath.Join(dir, "t.conf")
			_, _, err := Parse(name, []byte(tt.src), LoadOptions{})
			want := "[emerg] " + strings.ReplaceAll(tt.want, "DIR", dir) + " in " + name + ":" + strconv.Itoa(tt.line)
			if err == nil || err.Error() != want {
				t.Errorf("error = %v\nwant    %s", err, want)
			}
		})
	}

	// The main file itself.
	for _, path := range []string{"/dev/zero", fifo} {
		_, _, err := Load(path, LoadOptions{})
		if err == nil || !strings.Contains(err.Error(), `configuration file "`+path+`" cannot be read: not a regular file`) {
			t.Errorf("Load(%s) = %v, want it refused as not a regular file", path, err)
		}
	}
}

// TestNULInArguments: a NUL byte in any argument (the pid path, log
// paths, key log, certificate paths, -g directives) is refused at parse
// with the directive and its position, instead of passing -t and failing
// at start.
func TestNULInArguments(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "t.conf")
	srv := func(s string) string {
		return "stream {\nserver { listen 80; proxy_pass 127.0.0.1:1;\n" + s + "\n} }\n"
	}
	for _, tt := range []struct {
		src, directive string
		line           int
		global         string
	}{
		{src: "pid run\x00.pid;\n", directive: "pid", line: 1},
		{src: "\nerror_log /tmp/e\x00rr.log;\n", directive: "error_log", line: 2},
		{src: "include a\x00b.conf;\n", directive: "include", line: 1},
		{src: srv("access_log /tmp/a\x00.log;"), directive: "access_log", line: 3},
		{src: srv("proxy_ssl on; proxy_ssl_key_log /tmp/k\x00.log;"), directive: "proxy_ssl_key_log", line: 3},
		{src: srv("proxy_ssl on; proxy_ssl_certificate /c\x00.pem; proxy_ssl_certificate_key /c.key;"), directive: "proxy_ssl_certificate", line: 3},
		{src: srv("proxy_ssl on; proxy_ssl_verify on; proxy_ssl_trusted_certificate /ca\x00.pem;"), directive: "proxy_ssl_trusted_certificate", line: 3},
		{src: srv("proxy_ssl on; proxy_ssl_password_file /p\x00w;"), directive: "proxy_ssl_password_file", line: 3},
		{src: "", global: "pid /run/x\x00.pid;", directive: "pid"},
	} {
		_, _, err := Parse(name, []byte(tt.src), LoadOptions{Directives: tt.global})
		where := name + ":" + strconv.Itoa(tt.line)
		if tt.global != "" {
			where = "command line"
		}
		if err == nil || !strings.HasPrefix(err.Error(), "[emerg] NUL byte in the argument ") ||
			!strings.HasSuffix(err.Error(), ` of the "`+tt.directive+`" directive in `+where) {
			t.Errorf("%q: error = %v, want a NUL byte error for %q in %s", tt.src+tt.global, err, tt.directive, where)
		}
	}
	if _, _, err := Parse(name, []byte("pid run.pid;\n"), LoadOptions{}); err != nil {
		t.Errorf("a plain pid path: %v", err)
	}
}

// TestSecretFileModes: a private key or password file that its group or
// others can access loads (as in NGINX) with a warning at the directive;
// one at 0600 or 0400 draws none. A key named by several servers through
// one stream-level directive is reported once.
func TestSecretFileModes(t *testing.T) {
	dir, _ := writePKI(t)
	name := filepath.Join(dir, "t.conf")
	chmod := func(file string, mode os.FileMode) {
		if err := os.Chmod(filepath.Join(dir, file), mode); err != nil {
			t.Fatal(err)
		}
	}
	const clear = "proxy_ssl_certificate client.pem; proxy_ssl_certificate_key client.key;"
	const encrypted = "proxy_ssl_certificate client.pem; proxy_ssl_certificate_key encrypted.key; proxy_ssl_password_file password;"
	for _, tt := range []struct {
		name  string
		file  string
		mode  os.FileMode
		body  string
		warns []string
	}{
		{"key 0600", "client.key", 0o600, clear, nil},
		{"key 0400", "client.key", 0o400, clear, nil},
		{"key 0644", "client.key", 0o644, clear, []string{
			`[warn] permissions 0644 for the "proxy_ssl_certificate_key" file "DIR/client.key" are too open: group or others can access it (chmod 600 it) in DIR/t.conf:2`}},
		{"key 0640", "client.key", 0o640, clear, []string{
			`[warn] permissions 0640 for the "proxy_ssl_certificate_key" file "DIR/client.key" are too open: group or others can access it (chmod 600 it) in DIR/t.conf:2`}},
		{"password file 0604", "password", 0o604, encrypted, []string{
			`[warn] permissions 0604 for the "proxy_ssl_password_file" file "DIR/password" are too open: group or others can access it (chmod 600 it) in DIR/t.conf:2`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			chmod(tt.file, tt.mode)
			defer chmod(tt.file, 0o600)
			src := "stream {\n" + tt.body + "\n" +
				"server { listen 80; proxy_pass 127.0.0.1:1; proxy_ssl on; }\n" +
				"server { listen 81; proxy_pass 127.0.0.1:1; proxy_ssl on; }\n}\n"
			_, warns, err := Parse(name, []byte(src), LoadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, w := range warns {
				if strings.Contains(w.Msg, "too open") {
					got = append(got, w.String())
				}
			}
			if len(got) != len(tt.warns) {
				t.Fatalf("warnings %q, want %q", got, tt.warns)
			}
			for i := range got {
				if want := strings.ReplaceAll(tt.warns[i], "DIR", dir); got[i] != want {
					t.Errorf("warning %q\nwant    %q", got[i], want)
				}
			}
		})
	}
}

// TestMetricsListenEverywhere: metrics_listen on an unspecified address
// (every interface) warns so; any other address but loopback warns that
// the endpoint has no authentication; loopback does not warn.
func TestMetricsListenEverywhere(t *testing.T) {
	const everywhere = ` exposes the metrics endpoint, status page and api on every interface; ` +
		`listen on 127.0.0.1 or a private address unless it is firewalled in t.conf:1`
	const notLoopback = ` is not a loopback address: the metrics endpoint, status page and api ` +
		`have no authentication; keep it on a management network in t.conf:1`
	for _, tt := range []struct {
		addr, warn string
	}{
		{"*:9100", everywhere},
		{"0.0.0.0:9100", everywhere},
		{"[::]:9100", everywhere},
		{"127.0.0.1:9100", ""},
		{"[::1]:9100", ""},
		{"localhost:9100", ""},
		{"192.0.2.1:9100", notLoopback},
		{"metrics.example.org:9100", notLoopback},
	} {
		_, warns, err := Parse("t.conf", []byte("metrics_listen "+tt.addr+";\n"), LoadOptions{})
		if err != nil {
			t.Fatalf("%s: %v", tt.addr, err)
		}
		switch {
		case tt.warn == "" && len(warns) != 0:
			t.Errorf("%s: warnings %v, want none", tt.addr, warns)
		case tt.warn != "" && (len(warns) != 1 || warns[0].String() != `[warn] "metrics_listen" `+tt.addr+tt.warn):
			t.Errorf("%s: warnings %v, want %q", tt.addr, warns, tt.warn)
		}
	}
}
