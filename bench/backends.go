package bench

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/backend"
)

// BackendSpec describes a group of upstream servers for one phase of the
// run. It travels as JSON to the backend child process.
type BackendSpec struct {
	// Count is the number of servers; zero means 3.
	Count int `json:"count"`
	// Mode is "echo" (the default) or "source".
	Mode string `json:"mode"`
	// SourceBytes is what each connection to a source server receives.
	SourceBytes int64  `json:"source_bytes"`
	CertFile    string `json:"cert"`
	KeyFile     string `json:"key"`
	CAFile      string `json:"ca"`
	// Plain: the servers speak plaintext (no TLS; the files are unused).
	Plain bool `json:"plain,omitempty"`
}

func (s BackendSpec) count() int {
	if s.Count <= 0 {
		return 3
	}
	return s.Count
}

// Backends is a running group of upstream servers.
type Backends interface {
	// Addrs are the servers' "127.0.0.1:port" addresses.
	Addrs() []string
	// Stats returns the counters summed over the servers.
	Stats() (backend.Stats, error)
	// Close stops the servers.
	Close() error
}

// StartLocalBackends runs the servers inside this process. Tests use it;
// the driver runs them in a child process (StartChildBackends) to stay under
// the descriptor limit when thousands of connections are held.
func StartLocalBackends(spec BackendSpec) (Backends, error) {
	cert, err := tls.LoadX509KeyPair(spec.CertFile, spec.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("loading backend certificate: %w", err)
	}
	caPEM, err := os.ReadFile(spec.CAFile)
	if err != nil {
		return nil, fmt.Errorf("reading backend CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("no certificate in %s", spec.CAFile)
	}
	mode := backend.Echo
	switch spec.Mode {
	case "", "echo":
	case "source":
		mode = backend.Source
	default:
		return nil, fmt.Errorf("unknown backend mode %q", spec.Mode)
	}
	lb := &localBackends{}
	for i := 0; i < spec.count(); i++ {
		// A config per server: each gets its own session ticket keys, so a
		// ticket from one upstream does not resume on another.
		cfg := &tls.Config{
			Certificates: []tls.Certificate{cert},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    pool,
			MinVersion:   tls.VersionTLS12,
		}
		if spec.Plain {
			cfg = nil
		}
		s, err := backend.Start(backend.Config{TLS: cfg, Mode: mode, SourceBytes: spec.SourceBytes})
		if err != nil {
			lb.Close()
			return nil, fmt.Errorf("starting backend %d: %w", i, err)
		}
		lb.servers = append(lb.servers, s)
	}
	return lb, nil
}

type localBackends struct{ servers []*backend.Server }

func (l *localBackends) Addrs() []string {
	out := make([]string, len(l.servers))
	for i, s := range l.servers {
		out[i] = s.Addr()
	}
	return out
}

func (l *localBackends) Stats() (backend.Stats, error) {
	var sum backend.Stats
	for _, s := range l.servers {
		st := s.Stats()
		sum.Accepted += st.Accepted
		sum.Handshakes += st.Handshakes
		sum.Resumed += st.Resumed
		sum.HandshakeErrors += st.HandshakeErrors
		sum.BytesIn += st.BytesIn
		sum.BytesOut += st.BytesOut
		sum.Active += st.Active
	}
	return sum, nil
}

func (l *localBackends) Close() error {
	var errs []error
	for _, s := range l.servers {
		if err := s.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// The child protocol: the child prints one JSON line {"addrs": [...]}, then
// answers every "stats" line on its stdin with one JSON backend.Stats line,
// and exits when stdin closes.
type hello struct {
	Addrs []string `json:"addrs"`
	Err   string   `json:"error,omitempty"`
}

// ServeBackends is the body of the backend child process: it starts the
// servers spec describes, reports their addresses on out, answers "stats"
// requests read from in, and returns when in reaches EOF.
func ServeBackends(spec BackendSpec, in io.Reader, out io.Writer) error {
	enc := json.NewEncoder(out)
	b, err := StartLocalBackends(spec)
	if err != nil {
		enc.Encode(hello{Err: err.Error()})
		return err
	}
	defer b.Close()
	if err := enc.Encode(hello{Addrs: b.Addrs()}); err != nil {
		return fmt.Errorf("writing backend addresses: %w", err)
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		switch strings.TrimSpace(sc.Text()) {
		case "stats":
			st, _ := b.Stats()
			if err := enc.Encode(st); err != nil {
				return fmt.Errorf("writing backend stats: %w", err)
			}
		case "quit":
			return nil
		}
	}
	return sc.Err()
}

// StartChildBackends runs `exe backend -spec JSON` (the driver's backend
// subcommand) and talks to it over its stdin and stdout.
func StartChildBackends(exe string, spec BackendSpec) (Backends, error) {
	js, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("encoding backend spec: %w", err)
	}
	cmd := exec.Command(exe, "backend", "-spec", string(js))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("backend stdin: %w", err)
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("backend stdout: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting backend child: %w", err)
	}
	c := &childBackends{cmd: cmd, in: in, out: bufio.NewReader(outPipe)}
	var h hello
	if err := c.readJSON(&h, 30*time.Second); err != nil {
		c.Close()
		return nil, fmt.Errorf("waiting for backend child: %w", err)
	}
	if h.Err != "" {
		c.Close()
		return nil, fmt.Errorf("backend child: %s", h.Err)
	}
	c.addrs = h.Addrs
	return c, nil
}

type childBackends struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	in    io.WriteCloser
	out   *bufio.Reader
	addrs []string
	// broken is set when a read timed out: a reader goroutine may still
	// own out, so nothing may read it again.
	broken bool
}

func (c *childBackends) Addrs() []string { return c.addrs }

func (c *childBackends) readJSON(v any, timeout time.Duration) error {
	type res struct {
		line []byte
		err  error
	}
	ch := make(chan res, 1)
	go func() {
		line, err := c.out.ReadBytes('\n')
		ch <- res{line, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return fmt.Errorf("reading from backend child: %w", r.err)
		}
		if err := json.Unmarshal(r.line, v); err != nil {
			return fmt.Errorf("decoding backend child line %q: %w", r.line, err)
		}
		return nil
	case <-time.After(timeout):
		// The reader goroutine ends when Close kills the child.
		c.broken = true
		return fmt.Errorf("backend child silent for %v", timeout)
	}
}

func (c *childBackends) Stats() (backend.Stats, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var st backend.Stats
	if c.broken {
		return st, errors.New("backend child stopped answering")
	}
	if _, err := io.WriteString(c.in, "stats\n"); err != nil {
		return st, fmt.Errorf("asking backend child for stats: %w", err)
	}
	err := c.readJSON(&st, 10*time.Second)
	return st, err
}

func (c *childBackends) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.in.Close()
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		return <-done
	}
}

// Interface guards.
var (
	_ Backends = (*localBackends)(nil)
	_ Backends = (*childBackends)(nil)
)
