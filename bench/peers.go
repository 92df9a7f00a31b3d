package bench

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"text/template"
	"time"
)

// ProxySpec is what every proxy gets in one round: the same listener, the
// same upstreams and the same upstream TLS policy.
type ProxySpec struct {
	// Listen is the "127.0.0.1:port" to accept plaintext clients on.
	Listen    string
	Upstreams []string
	// Workers is tlsrelay's and NGINX's worker_processes and HAProxy's
	// nbthread.
	Workers int
	// Version is tls.VersionTLS12 or tls.VersionTLS13, the only version
	// offered upstream.
	Version uint16
	// Reuse turns upstream session resumption on.
	Reuse bool
	// Plain proxies to plaintext upstreams: no proxy_ssl (Version, Reuse
	// and Material's files are then unused).
	Plain    bool
	Material *Material
	// Dir is a private directory for the configuration, pid file and logs.
	Dir string
	// Prewarm is tlsrelay's proxy_ssl_prewarm; 0: off. The other proxies
	// have no such directive and ignore it.
	Prewarm int
}

func (s ProxySpec) protocol() string {
	if s.Version == tls.VersionTLS12 {
		return "TLSv1.2"
	}
	return "TLSv1.3"
}

func (s ProxySpec) onOff() string {
	if s.Reuse {
		return "on"
	}
	return "off"
}

// Groups is the proxy_ssl_conf_command Groups value both proxies get. The
// key exchange is X25519 in every handshake (the first group: OpenSSL and Go
// send their only key share for it, and the Go upstreams prefer it). P-256
// is listed as well because in TLS 1.2 OpenSSL also checks the server's
// ECDSA certificate curve against this list ("wrong curve" without it).
const Groups = "X25519:P-256"

// streamTemplate is the stream block tlsrelay and NGINX both read.
var streamTemplate = template.Must(template.New("stream").Parse(`stream {
    upstream backend {
{{- range .Upstreams}}
        server {{.}};
{{- end}}
    }
    server {
        listen {{.Listen}};
        proxy_pass backend;
{{- if not .plain}}
        proxy_ssl on;
        proxy_ssl_certificate {{.Material.Files.ClientCert}};
        proxy_ssl_certificate_key {{.Material.Files.ClientKey}};
        proxy_ssl_trusted_certificate {{.Material.Files.CA}};
        proxy_ssl_verify on;
        proxy_ssl_verify_depth 2;
        proxy_ssl_name localhost;
        proxy_ssl_protocols {{.protocol}};
        proxy_ssl_session_reuse {{.onOff}};
        proxy_ssl_conf_command Groups {{.groups}};
{{- if .prewarm}}
        proxy_ssl_prewarm {{.prewarm}};
{{- end}}
{{- end}}
    }
}
`))

func renderStream(s ProxySpec) (string, error) {
	var b bytes.Buffer
	// text/template cannot call unexported methods, so hand it a map.
	err := streamTemplate.Execute(&b, map[string]any{
		"Upstreams": s.Upstreams, "Listen": s.Listen, "Material": s.Material,
		"protocol": s.protocol(), "onOff": s.onOff(), "groups": Groups, "prewarm": s.Prewarm, "plain": s.Plain,
	})
	if err != nil {
		return "", fmt.Errorf("rendering stream block: %w", err)
	}
	return b.String(), nil
}

// TlsrelayConfig returns the configuration tlsrelay reads for spec.
func TlsrelayConfig(s ProxySpec) (string, error) {
	stream, err := renderStream(s)
	if err != nil {
		return "", err
	}
	// The same worker_connections as NGINX's: tlsrelay enforces it.
	return fmt.Sprintf("# written by tlsrelay-bench\nworker_processes %d;\nevents {\n    worker_connections 20000;\n}\n\n%s", s.Workers, stream), nil
}

// NginxConfig returns the configuration NGINX reads for spec: the same
// stream block as tlsrelay's, with the stream module loaded and the pid file
// and error log under s.Dir.
func NginxConfig(s ProxySpec, modulePath string) (string, error) {
	s.Prewarm = 0 // tlsrelay's own directive
	stream, err := renderStream(s)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("# written by tlsrelay-bench\n")
	if modulePath != "" {
		fmt.Fprintf(&b, "load_module %s;\n", modulePath)
	}
	fmt.Fprintf(&b, "worker_processes %d;\nworker_rlimit_nofile 20000;\ndaemon off;\nmaster_process on;\n", s.Workers)
	fmt.Fprintf(&b, "pid %s;\nerror_log %s warn;\n", filepath.Join(s.Dir, "nginx.pid"), filepath.Join(s.Dir, "error.log"))
	b.WriteString("events {\n    worker_connections 20000;\n}\n\n")
	b.WriteString(stream)
	return b.String(), nil
}

// HAProxyConfig returns an HAProxy configuration equivalent to the stream
// block: TCP mode, round robin over the same servers, a client certificate,
// verification against the same root with the name "localhost", one TLS
// version, X25519, and "no-ssl-reuse" when reuse is off.
func HAProxyConfig(s ProxySpec) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# written by tlsrelay-bench
global
    nbthread %d
    maxconn 9800
    log stderr format raw local0 warning

defaults
    mode tcp
    timeout connect 10s
    timeout client 120s
    timeout server 120s

listen relay
    bind %s
    balance roundrobin
`, s.Workers, s.Listen)
	for i, u := range s.Upstreams {
		if s.Plain {
			fmt.Fprintf(&b, "    server s%d %s\n", i+1, u)
			continue
		}
		fmt.Fprintf(&b, "    server s%d %s ssl crt %s ca-file %s verify required verifyhost localhost ssl-min-ver %s ssl-max-ver %s",
			i+1, u, s.Material.ClientCombined, s.Material.Files.CA, s.protocol(), s.protocol())
		if !s.Reuse {
			b.WriteString(" no-ssl-reuse")
		}
		b.WriteString("\n")
	}
	return b.String()
}

// Peer is one proxy implementation the harness can run.
type Peer interface {
	// Name is the column title: "tlsrelay", "NGINX", "HAProxy".
	Name() string
	// Version is a one-line version string, or "" when unknown.
	Version() string
	// Start runs the proxy for spec and returns once it accepts
	// connections on spec.Listen.
	Start(spec ProxySpec) (*Instance, error)
}

// Instance is a running proxy.
type Instance struct {
	name string
	cmd  *exec.Cmd
	log  string // file with the proxy's stderr or error log
	done chan struct{}
	err  error // Wait's result, valid after done is closed

	mu   sync.Mutex
	pids []int // the processes whose CPU and memory count
}

// PIDs returns the processes of the proxy: the main one and, for NGINX, its
// workers.
func (in *Instance) PIDs() []int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]int(nil), in.pids...)
}

// CPU returns the summed utime+stime of the proxy's processes.
func (in *Instance) CPU() (time.Duration, error) { return SumCPU(in.PIDs()) }

// RSS returns the summed VmRSS of the proxy's processes, in bytes.
func (in *Instance) RSS() (int64, error) { return SumRSS(in.PIDs()) }

// Exited reports whether the main process has ended.
func (in *Instance) Exited() bool {
	select {
	case <-in.done:
		return true
	default:
		return false
	}
}

// Stop ends the proxy: SIGTERM, then SIGKILL after five seconds; NGINX
// workers left behind are killed by pid.
func (in *Instance) Stop() error {
	pids := in.PIDs()
	if !in.Exited() {
		in.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-in.done:
		case <-time.After(5 * time.Second):
			in.cmd.Process.Kill()
			<-in.done
		}
	}
	for _, p := range pids[1:] {
		if _, err := ReadProcStat(p); err == nil {
			syscall.Kill(p, syscall.SIGKILL)
		}
	}
	return nil
}

// logTail returns the last lines of the instance's log, for error messages.
func (in *Instance) logTail() string { return tailFile(in.log, 3) }

// startProcess runs argv with stderr and stdout into logPath, waits until
// listen accepts a TCP connection, and collects the pids: the main process
// and its children, waiting for at least wantChildren of them.
func startProcess(name string, argv []string, logPath, listen string, wantChildren int) (*Instance, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", logPath, err)
	}
	defer logf.Close()
	// The process runs in its private directory, so a relative program
	// path ("bin/tlsrelay", as make bench passes it) must be made absolute
	// first.
	prog, err := absProgram(argv[0])
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	cmd := exec.Command(prog, argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = filepath.Dir(logPath)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	in := &Instance{name: name, cmd: cmd, log: logPath, done: make(chan struct{}), pids: []int{cmd.Process.Pid}}
	go func() {
		in.err = cmd.Wait()
		close(in.done)
	}()
	if err := in.waitReady(listen, wantChildren); err != nil {
		in.Stop()
		return nil, err
	}
	return in, nil
}

// absProgram returns path made absolute when it names a file relative to
// the working directory; a bare name ("nginx") is left for PATH lookup.
func absProgram(path string) (string, error) {
	if !strings.ContainsRune(path, filepath.Separator) || filepath.IsAbs(path) {
		return path, nil
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("resolving %s: %w", path, err)
	}
	return abs, nil
}

func (in *Instance) waitReady(listen string, wantChildren int) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if in.Exited() {
			msg := fmt.Sprintf("%s exited: %v", in.name, in.err)
			if t := in.logTail(); t != "" {
				msg += ": " + t
			}
			return errors.New(msg)
		}
		c, err := net.DialTimeout("tcp", listen, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not accept on %s: %w", in.name, listen, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for {
		kids, err := Children(in.cmd.Process.Pid)
		if err != nil {
			return err
		}
		if len(kids) >= wantChildren {
			in.mu.Lock()
			in.pids = append(in.pids[:1], kids...)
			in.mu.Unlock()
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s started %d of %d workers", in.name, len(kids), wantChildren)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// versionOf runs argv and returns the first line it prints.
func versionOf(argv ...string) string {
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil && len(out) == 0 {
		return ""
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

// Tlsrelay runs the tlsrelay binary at Path with `-c FILE`.
type Tlsrelay struct {
	Path string
	// Build describes the binary (e.g. the commit it was built from); it
	// is added to what `tlsrelay -v` prints.
	Build string
	// Label, if set, is the column title instead of "tlsrelay": a second
	// build measured beside the first (the ratios stay the first's).
	Label string
}

// Name implements Peer.
func (t Tlsrelay) Name() string {
	if t.Label != "" {
		return t.Label
	}
	return "tlsrelay"
}

// Version implements Peer.
func (t Tlsrelay) Version() string {
	v := versionOf(t.Path, "-v")
	switch {
	case v == "":
		return t.Build
	case t.Build == "":
		return v
	}
	return v + ", " + t.Build
}

// Start implements Peer.
func (t Tlsrelay) Start(s ProxySpec) (*Instance, error) {
	cfg, err := TlsrelayConfig(s)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(s.Dir, "tlsrelay.conf")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	return startProcess("tlsrelay", []string{t.Path, "-c", path}, filepath.Join(s.Dir, "tlsrelay.log"), s.Listen, 0)
}

// Nginx runs NGINX in the foreground with a master and Workers workers.
type Nginx struct {
	Path string
	// Module is the path of ngx_stream_module.so, or "" when the stream
	// module is built in.
	Module string
}

// Name implements Peer.
func (n Nginx) Name() string { return "NGINX" }

// Version implements Peer.
func (n Nginx) Version() string { return versionOf(n.Path, "-v") }

// Start implements Peer.
func (n Nginx) Start(s ProxySpec) (*Instance, error) {
	cfg, err := NginxConfig(s, n.Module)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(s.Dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	// NGINX opens error_log before reading the configuration; -e keeps
	// even that inside the private directory.
	errLog := filepath.Join(s.Dir, "error.log")
	in, err := startProcess("nginx", []string{n.Path, "-p", s.Dir, "-e", errLog, "-c", path}, errLog, s.Listen, s.Workers)
	return in, err
}

// HAProxy runs HAProxy in the foreground (-db), one process with Workers
// threads.
type HAProxy struct{ Path string }

// Name implements Peer.
func (h HAProxy) Name() string { return "HAProxy" }

// Version implements Peer.
func (h HAProxy) Version() string { return versionOf(h.Path, "-v") }

// Start implements Peer.
func (h HAProxy) Start(s ProxySpec) (*Instance, error) {
	path := filepath.Join(s.Dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(HAProxyConfig(s)), 0o600); err != nil {
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	return startProcess("haproxy", []string{h.Path, "-db", "-f", path}, filepath.Join(s.Dir, "haproxy.log"), s.Listen, 0)
}

// FreePort returns a "127.0.0.1:port" that was free a moment ago.
func FreePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// Interface guards.
var (
	_ Peer = Tlsrelay{}
	_ Peer = Nginx{}
	_ Peer = HAProxy{}
)
