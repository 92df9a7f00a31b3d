package main

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

const examples = "../../docs/examples"

// runCmd runs the command in process and returns exit code and outputs.
func runCmd(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// certs writes a PKI into dir/certs under the names the guide uses and
// returns the three paths (client certificate, its key, the CA).
func certs(t *testing.T, dir string) (crt, key, ca string) {
	t.Helper()
	set, err := pki.NewSet(pki.ECDSAP256, 1)
	if err != nil {
		t.Fatal(err)
	}
	cdir := filepath.Join(dir, "certs")
	if err := os.MkdirAll(cdir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := set.WriteFiles(cdir)
	if err != nil {
		t.Fatal(err)
	}
	crt, key, ca = filepath.Join(cdir, "backend.crt"), filepath.Join(cdir, "backend.key"), filepath.Join(cdir, "trusted_ca_cert.crt")
	for from, to := range map[string]string{f.ClientCert: crt, f.ClientKey: key, f.CA: ca} {
		if err := os.Rename(from, to); err != nil {
			t.Fatal(err)
		}
	}
	return crt, key, ca
}

// TestGuideExample runs -t on the guide's example verbatim except for the
// certificate paths, pointed at generated files.
func TestGuideExample(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(examples, "secure-upstream.conf"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	crt, key, ca := certs(t, dir)
	text := strings.NewReplacer(
		"/etc/ssl/certs/backend.crt", crt,
		"/etc/ssl/certs/backend.key", key,
		"/etc/ssl/certs/trusted_ca_cert.crt", ca,
	).Replace(string(src))
	path := filepath.Join(dir, "tlsrelay.conf")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}

	cfg, warns, err := conf.Load(path, conf.LoadOptions{})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if len(warns) != 0 {
		t.Errorf("warnings: %v", warns)
	}
	s := cfg.Stream.Servers[0]
	ssl := s.Proxy.SSL
	if s.Listen[0].Addr != "0.0.0.0:12345" || s.Upstream == nil || s.Upstream.Name != "backend" ||
		len(s.Upstream.Servers) != 3 || s.Upstream.Servers[2].Host != "backend3.example.com" ||
		!ssl.Enabled || !ssl.Verify || ssl.VerifyDepth != 2 || !ssl.SessionReuse || ssl.Ciphers != "HIGH:!aNULL:!MD5" ||
		!reflect.DeepEqual(ssl.Protocols, []string{"TLSv1", "TLSv1.1", "TLSv1.2"}) ||
		ssl.Certificate != crt || ssl.CertificateKey != key || ssl.TrustedCertificate != ca {
		t.Errorf("server = %+v\nssl = %+v", s, ssl)
	}

	// As NGINX, -t resolves the upstream names; the guide's do not exist.
	code, _, stderr := runCmd("-t", "-c", path)
	if code == 1 && strings.Contains(stderr, `host not found in upstream "backend1.example.com:12345"`) {
		text = strings.ReplaceAll(text, "backend1.example.com", "127.0.0.1")
		text = strings.ReplaceAll(text, "backend2.example.com", "127.0.0.1")
		text = strings.ReplaceAll(text, "backend3.example.com", "localhost")
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		code, _, stderr = runCmd("-t", "-c", path)
	}
	if code != 0 {
		t.Fatalf("tlsrelay -t: exit %d\n%s", code, stderr)
	}
	want := "tlsrelay: the configuration file " + path + " syntax is ok\n" +
		"tlsrelay: configuration file " + path + " test is successful\n"
	if !strings.HasSuffix(stderr, want) {
		t.Errorf("tlsrelay -t output:\n%s\nwant it to end with:\n%s", stderr, want)
	}
	checkOldProtocolWarning(t, stderr)
}

// checkOldProtocolWarning checks that -t warned about TLSv1 and TLSv1.1
// once: from conf, or from the engine when it says the same.
func checkOldProtocolWarning(t *testing.T, stderr string) {
	t.Helper()
	ours := strings.Contains(stderr, `[warn] "proxy_ssl_protocols" enables TLSv1 TLSv1.1, which are insecure in `)
	engines := 0
	for _, line := range strings.Split(stderr, "\n") {
		if strings.Contains(line, "[warn]") && !strings.Contains(line, "proxy_ssl_protocols") &&
			(strings.Contains(line, "TLSv1 ") || strings.Contains(line, "TLSv1.1 ")) {
			engines++
		}
	}
	if ours == (engines == 2) {
		t.Errorf("want one warning about TLSv1 and TLSv1.1 (conf's or the engine's), got:\n%s", stderr)
	}
}

// TestGuideExampleMissingFiles: the verbatim file refers to /etc/ssl/certs,
// which a test machine does not have; -t must say which file and where.
func TestGuideExampleMissingFiles(t *testing.T) {
	path, _ := filepath.Abs(filepath.Join(examples, "secure-upstream.conf"))
	if _, err := os.Stat("/etc/ssl/certs/backend.crt"); err == nil {
		t.Skip("/etc/ssl/certs/backend.crt exists here")
	}
	code, _, stderr := runCmd("-t", "-c", path)
	want := "tlsrelay: [emerg] cannot load certificate \"/etc/ssl/certs/backend.crt\": no such file or directory in " +
		path + ":13\ntlsrelay: configuration file " + path + " test failed\n"
	if code != 1 || stderr != want {
		t.Errorf("exit %d, stderr:\n%s\nwant:\n%s", code, stderr, want)
	}
}

// TestLocalExample checks docs/examples/secure-upstream-local.conf with the
// certificates next to it, through a built binary as a user would.
func TestLocalExample(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	certs(t, dir)
	src, err := os.ReadFile(filepath.Join(examples, "secure-upstream-local.conf"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "tlsrelay.conf")
	if err := os.WriteFile(path, src, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-t", "-c", path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("tlsrelay -t: %v\n%s", err, stderr.String())
	}
	checkOldProtocolWarning(t, stderr.String())
	for _, want := range []string{
		"tlsrelay: the configuration file " + path + " syntax is ok\n",
		"tlsrelay: configuration file " + path + " test is successful\n",
	} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, stderr.String())
		}
	}
	// -p makes the relative -c relative to the prefix.
	cmd = exec.Command(bin, "-q", "-t", "-p", dir, "-c", "tlsrelay.conf")
	if out, err := cmd.CombinedOutput(); err != nil || strings.Contains(string(out), "successful") {
		t.Errorf("tlsrelay -q -t -p: %v\n%s", err, out)
	}
	// A broken file: exit status 1 and the position.
	if err := os.WriteFile(path, []byte("stream {\n  proxy_ssl_verfiy on;\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-t", "-c", path).CombinedOutput()
	want := "tlsrelay: [emerg] unknown directive \"proxy_ssl_verfiy\" in " + path + ":2\n" +
		"tlsrelay: configuration file " + path + " test failed\n"
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || string(out) != want {
		t.Errorf("broken config: %v\n%s\nwant:\n%s", err, out, want)
	}
}

func TestTestOutput(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "t.conf")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("daemon on;\nuser www;\nstream { server { listen 1234; proxy_pass 127.0.0.1:4321;\nproxy_ssl on; } }\n")
	code, stdout, stderr := runCmd("-t", "-c", path)
	head := "tlsrelay: [warn] \"daemon on\" is ignored: tlsrelay always runs in the foreground in " + path + ":1\n" +
		"tlsrelay: [warn] \"user\" directive is ignored: tlsrelay is a stream proxy only in " + path + ":2\n"
	tail := "tlsrelay: the configuration file " + path + " syntax is ok\n" +
		"tlsrelay: configuration file " + path + " test is successful\n"
	if code != 0 || stdout != "" || !strings.HasPrefix(stderr, head) || !strings.HasSuffix(stderr, tail) {
		t.Errorf("-t: exit %d\nstdout %q\nstderr:\n%s\nwant:\n%s...\n%s", code, stdout, stderr, head, tail)
	}
	// The insecure-setting warning comes once, from conf or the engine.
	if n := strings.Count(stderr, "proxy_ssl_verify"); n != 1 {
		t.Errorf("-t: %d warnings about proxy_ssl_verify, want 1:\n%s", n, stderr)
	}

	code, stdout, _ = runCmd("-T", "-c", path, "-g", "worker_processes 4;")
	// worker_connections is derived from the descriptor limit unless set
	// (docs/configuration.md): -T prints it only when set.
	if strings.Contains(stdout, "worker_connections") {
		t.Errorf("-T prints a worker_connections that was not set:\n%s", stdout)
	}
	for _, want := range []string{"worker_processes 4;", "listen 0.0.0.0:1234;", "proxy_ssl on;",
		"proxy_ssl_protocols TLSv1.2 TLSv1.3;", "proxy_connect_timeout 1m;", "proxy_timeout 10m;",
		"proxy_ssl_verify_depth 1;", "proxy_ssl_session_reuse on;", "events {"} {
		if code != 0 || !strings.Contains(stdout, want) {
			t.Errorf("-T output lacks %q (exit %d):\n%s", want, code, stdout)
		}
	}

	code, _, stderr = runCmd("-tq", "-c", path)
	if code != 0 || strings.Contains(stderr, "syntax is ok") {
		t.Errorf("-tq: exit %d, %s", code, stderr)
	}

	code, _, stderr = runCmd("-t", "-c", filepath.Join(dir, "nope.conf"))
	want := "tlsrelay: [emerg] open() \"" + filepath.Join(dir, "nope.conf") + "\" failed (2: No such file or directory)\n" +
		"tlsrelay: configuration file " + filepath.Join(dir, "nope.conf") + " test failed\n"
	if code != 1 || stderr != want {
		t.Errorf("missing file: exit %d\n%s\nwant\n%s", code, stderr, want)
	}

	code, _, stderr = runCmd("-t", "-c", path, "-g", "pid x")
	if code != 1 || !strings.Contains(stderr, `[emerg] unexpected end of parameter, expecting ";" in command line`) {
		t.Errorf("-g error: exit %d\n%s", code, stderr)
	}

	// Default configuration file: conf/tlsrelay.conf under the prefix.
	if err := os.MkdirAll(filepath.Join(dir, "conf"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path, filepath.Join(dir, "conf", "tlsrelay.conf")); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr = runCmd("-t", "-p", dir); code != 0 || !strings.Contains(stderr, filepath.Join(dir, "conf/tlsrelay.conf")) {
		t.Errorf("-t -p: exit %d\n%s", code, stderr)
	}
}

func TestVersionAndHelp(t *testing.T) {
	code, _, stderr := runCmd("-v")
	if code != 0 || stderr != "tlsrelay version: tlsrelay/0.1.0\n" {
		t.Errorf("-v: %d %q", code, stderr)
	}
	code, _, stderr = runCmd("-V")
	if code != 0 || !strings.Contains(stderr, "built with go") {
		t.Errorf("-V: %d %q", code, stderr)
	}
	for _, h := range []string{"-h", "-?"} {
		code, _, stderr = runCmd(h)
		if code != 0 || !strings.Contains(stderr, "Usage: tlsrelay [-?hvVtTq]") {
			t.Errorf("%s: %d %q", h, code, stderr)
		}
	}
}

func TestParseArgs(t *testing.T) {
	tests := []struct {
		args []string
		want options
		err  string
	}{
		{[]string{"-t"}, options{test: true}, ""},
		{[]string{"-T"}, options{test: true, dump: true}, ""},
		{[]string{"-tq", "-c", "x.conf"}, options{test: true, quiet: true, conf: "x.conf"}, ""},
		{[]string{"-tcx.conf"}, options{test: true, conf: "x.conf"}, ""},
		{[]string{"-p", "/srv/", "-g", "daemon off;"}, options{prefix: "/srv/", global: "daemon off;"}, ""},
		{[]string{"-s", "quit"}, options{signal: "quit"}, ""},
		{[]string{"-sstop"}, options{signal: "stop"}, ""},
		{[]string{"-V"}, options{version: true, build: true}, ""},
		{[]string{"-s", "kill"}, options{}, `invalid option: "-s kill"`},
		{[]string{"-c"}, options{}, `option "-c" requires file name`},
		{[]string{"-p"}, options{}, `option "-p" requires directory name`},
		{[]string{"-g"}, options{}, `option "-g" requires parameter`},
		{[]string{"-x"}, options{}, `invalid option: "x"`},
		{[]string{"-tx"}, options{}, `invalid option: "x"`},
		{[]string{"conf"}, options{}, `invalid option: "conf"`},
		{[]string{"-"}, options{}, `invalid option: "-"`},
	}
	for _, tt := range tests {
		got, err := parseArgs(tt.args)
		if tt.err != "" {
			if err == nil || err.Error() != tt.err {
				t.Errorf("parseArgs(%q) error = %v, want %s", tt.args, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("parseArgs(%q) = %+v, %v; want %+v", tt.args, got, err, tt.want)
		}
	}
}

func TestEngineCovers(t *testing.T) {
	verify := conf.Warning{Msg: `"proxy_ssl_verify" is off: the upstream certificate is not verified`}
	protos := conf.Warning{Msg: `"proxy_ssl_protocols" enables TLSv1 TLSv1.1, which are insecure`}
	tests := []struct {
		w      conf.Warning
		engine []string
		want   bool
	}{
		{verify, nil, false},
		{verify, []string{"proxy_ssl_verify is off: the upstream certificate is not checked in x:3"}, true},
		{verify, []string{"proxy_ssl_verify_depth is 9 in x:3"}, false},
		{protos, []string{"TLSv1 is enabled: it is deprecated (RFC 8996) in x:1", "TLSv1.1 is enabled in x:1"}, true},
		{protos, []string{"TLSv1.1 is enabled in x:1", "TLSv1.2 is fine"}, false},
		{protos, []string{"proxy_ssl_ciphers selects suites"}, false},
	}
	for i, tt := range tests {
		if got := engineCovers(tt.w, tt.engine); got != tt.want {
			t.Errorf("#%d: engineCovers(%q, %q) = %v, want %v", i, tt.w.Msg, tt.engine, got, tt.want)
		}
	}
}

// TestSignalWithoutPid: -s without a pid file, and with one naming no
// process, fails with NGINX's messages, errno included.
func TestSignalWithoutPid(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "t.conf")
	if err := os.WriteFile(path, []byte("pid run.pid;\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runCmd("-s", "stop", "-p", dir, "-c", path)
	if want := `tlsrelay: [error] open() "` + filepath.Join(dir, "run.pid") + `" failed (2: No such file or directory)` + "\n"; code != 1 || stderr != want {
		t.Errorf("-s stop: %d %q, want 1 %q", code, stderr, want)
	}
	// A pid file that names no process: NGINX's kill() alert, with errno.
	if err := os.WriteFile(filepath.Join(dir, "run.pid"), []byte("2147483647\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runCmd("-s", "reload", "-p", dir, "-c", path)
	if want := "tlsrelay: [alert] kill(2147483647, 1) failed (3: No such process)\n"; code != 1 || stderr != want {
		t.Errorf("-s reload: %d %q, want 1 %q", code, stderr, want)
	}
}

// buildBinary builds the command into a temporary directory.
func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "tlsrelay")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestServeSignals runs the binary, waits for its pid file, stops it with
// `tlsrelay -s quit` and `-s stop`, and checks the pid file is removed.
func TestServeSignals(t *testing.T) {
	bin := buildBinary(t)
	for _, sig := range []string{"quit", "stop"} {
		t.Run(sig, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "t.conf")
			pid := filepath.Join(dir, "run.pid")
			src := "pid run.pid;\nstream { server { listen " + testutil.FreeAddr(t) + "; proxy_pass " +
				testutil.FreeAddr(t) + "; } }\n"
			if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bin, "-p", dir, "-c", path)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			deadline := time.After(20 * time.Second)
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
		wait:
			for {
				select {
				case err := <-done:
					t.Fatalf("tlsrelay exited early: %v\n%s", err, stderr.String())
				case <-deadline:
					cmd.Process.Kill()
					t.Fatalf("no pid file after 20s\n%s", stderr.String())
				case <-tick.C:
					if data, err := os.ReadFile(pid); err == nil && strings.HasSuffix(string(data), "\n") {
						if got := strings.TrimSpace(string(data)); got != strconv.Itoa(cmd.Process.Pid) {
							t.Errorf("pid file holds %q, want %d", got, cmd.Process.Pid)
						}
						break wait
					}
				}
			}
			if out, err := exec.Command(bin, "-p", dir, "-c", path, "-s", sig).CombinedOutput(); err != nil {
				t.Fatalf("tlsrelay -s %s: %v\n%s", sig, err, out)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("tlsrelay after -s %s: %v\n%s", sig, err, stderr.String())
				}
			case <-deadline:
				cmd.Process.Kill()
				t.Fatalf("tlsrelay did not stop after -s %s\n%s", sig, stderr.String())
			}
			if _, err := os.Stat(pid); !os.IsNotExist(err) {
				t.Errorf("pid file left behind: %v", err)
			}
		})
	}
}

// TestPIDUnwritable runs the binary with a pid file in a directory that
// does not exist: the pid file is written once the listeners are bound,
// and failing to write it ends the process with status 1 and an error
// that names the file.
func TestPIDUnwritable(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "t.conf")
	writeFile(t, path, "pid nodir/run.pid;\nstream { server { listen "+testutil.FreeAddr(t)+
		"; proxy_pass "+testutil.FreeAddr(t)+"; } }\n")
	cmd := exec.Command(bin, "-p", dir, "-c", path)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("tlsrelay with an unwritable pid file: %v, want exit status 1\n%s", err, out)
	}
	if want := filepath.Join(dir, "nodir"); !strings.Contains(string(out), "writing pid file") || !strings.Contains(string(out), want) {
		t.Errorf("output %q does not say writing the pid file in %s failed", out, want)
	}
}

// TestAddressInUse starts the binary on an address another socket holds:
// it exits with status 1 and NGINX's words for it, with the file and line
// of the listen directive, and writes no pid file (an instance already
// running keeps its own).
func TestAddressInUse(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	path := filepath.Join(dir, "t.conf")
	writeFile(t, path, "pid run.pid;\nstream {\n    server {\n        listen "+busy.Addr().String()+
		";\n        proxy_pass "+testutil.FreeAddr(t)+";\n    }\n}\n")
	out, err := exec.Command(bin, "-p", dir, "-c", path).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("tlsrelay on a busy address: %v, want exit status 1\n%s", err, out)
	}
	want := "tlsrelay: [emerg] bind() to " + busy.Addr().String() + " failed (98: Address already in use) in " + path + ":4\n"
	if string(out) != want {
		t.Errorf("output\n%q\nwant\n%q", out, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "run.pid")); !os.IsNotExist(err) {
		t.Errorf("pid file written by a process that could not bind: %v", err)
	}
}
