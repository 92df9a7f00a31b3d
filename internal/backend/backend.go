// Package backend runs TLS upstream servers for tests, the demo and the
// benchmarks: echo, sink and source servers that require a client
// certificate, count full and resumed handshakes as the server sees them
// (tls.ConnectionState.DidResume), record the client certificate subjects,
// and can read at a limited rate to exercise the proxy's backpressure.
//
// A Server is safe for concurrent use; each accepted connection runs on its
// own goroutine.
package backend

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Mode says what a server does with an accepted connection.
type Mode int

// Modes.
const (
	// Echo writes back every byte it reads, until the peer closes.
	Echo Mode = iota
	// Sink reads and discards until the peer closes, then closes.
	Sink
	// Source writes Config.SourceBytes bytes of a fixed pattern, then
	// closes (after close_notify).
	Source
	// Hold completes the handshake, reads one byte and then waits for the
	// peer to close: an idle upstream.
	Hold
)

// Config describes one server. The zero value (plus TLS) is an echo server
// on a free 127.0.0.1 port.
type Config struct {
	// Addr to listen on; "" means "127.0.0.1:0"; "unix:/path" is a unix
	// domain socket.
	Addr string
	// TLS is the server configuration; nil serves plaintext.
	TLS  *tls.Config
	Mode Mode
	// SourceBytes is how much a Source server sends.
	SourceBytes int64
	// ReadRate limits reading to this many bytes per second; 0 is
	// unlimited.
	ReadRate int64
	// Name is reported by ID-mode clients; defaults to the address.
	Name string
}

// Stats are the server's counters.
type Stats struct {
	Accepted        int64 // TCP connections accepted
	Handshakes      int64 // completed TLS handshakes
	Resumed         int64 // of which resumed
	HandshakeErrors int64
	BytesIn         int64
	BytesOut        int64
	Active          int64
}

// Server is a running backend.
type Server struct {
	cfg Config
	ln  net.Listener

	accepted, handshakes, resumed, hsErrors atomic.Int64
	bytesIn, bytesOut, active               atomic.Int64

	mu        sync.Mutex
	subjects  map[string]int64 // client certificate subjects seen
	versions  map[uint16]int64
	sni       map[string]int64
	lastError error
	conns     map[net.Conn]struct{}
	closed    bool

	wg sync.WaitGroup
}

// Start listens and serves in the background until Close.
func Start(cfg Config) (*Server, error) {
	addr := cfg.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	network := "tcp"
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, addr = "unix", path
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	s := &Server{
		cfg: cfg, ln: ln,
		subjects: map[string]int64{}, versions: map[uint16]int64{}, sni: map[string]int64{},
		conns: map[net.Conn]struct{}{},
	}
	s.wg.Add(1)
	go s.acceptLoop()
	return s, nil
}

// Addr returns the listening address, "127.0.0.1:port" (or "unix:/path"
// for a server started on a unix domain socket).
func (s *Server) Addr() string {
	if _, ok := s.ln.(*net.UnixListener); ok {
		return "unix:" + s.ln.Addr().String()
	}
	return s.ln.Addr().String()
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	return Stats{
		Accepted: s.accepted.Load(), Handshakes: s.handshakes.Load(), Resumed: s.resumed.Load(),
		HandshakeErrors: s.hsErrors.Load(), BytesIn: s.bytesIn.Load(), BytesOut: s.bytesOut.Load(),
		Active: s.active.Load(),
	}
}

// Subjects returns how many handshakes presented each client certificate
// subject (the empty string counts handshakes without one).
func (s *Server) Subjects() map[string]int64 { return snapshot(&s.mu, s.subjects) }

// ServerNames returns how many handshakes carried each SNI value.
func (s *Server) ServerNames() map[string]int64 { return snapshot(&s.mu, s.sni) }

// Versions returns how many handshakes negotiated each TLS version.
func (s *Server) Versions() map[uint16]int64 { return snapshot(&s.mu, s.versions) }

// snapshot copies a counter map under mu.
func snapshot[K comparable](mu *sync.Mutex, m map[K]int64) map[K]int64 {
	mu.Lock()
	defer mu.Unlock()
	return maps.Clone(m)
}

// LastError returns the last handshake error the server saw.
func (s *Server) LastError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastError
}

// Close stops listening, closes open connections and waits for their
// goroutines.
func (s *Server) Close() error {
	err := s.ln.Close()
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// EMFILE and friends: back off briefly rather than spin.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		s.accepted.Add(1)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serve(c)
	}
}

func (s *Server) serve(raw net.Conn) {
	defer s.wg.Done()
	s.active.Add(1)
	defer s.active.Add(-1)
	defer func() {
		raw.Close()
		s.mu.Lock()
		delete(s.conns, raw)
		s.mu.Unlock()
	}()
	var c net.Conn = raw
	if s.cfg.TLS != nil {
		tc := tls.Server(raw, s.cfg.TLS)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			s.hsErrors.Add(1)
			s.mu.Lock()
			s.lastError = err
			s.mu.Unlock()
			return
		}
		cs := tc.ConnectionState()
		s.handshakes.Add(1)
		if cs.DidResume {
			s.resumed.Add(1)
		}
		subj := ""
		if len(cs.PeerCertificates) > 0 {
			subj = cs.PeerCertificates[0].Subject.CommonName
		}
		s.mu.Lock()
		s.subjects[subj]++
		s.versions[cs.Version]++
		s.sni[cs.ServerName]++
		s.mu.Unlock()
		c = tc
	}
	switch s.cfg.Mode {
	case Echo:
		s.echo(c)
	case Sink:
		n, _ := io.Copy(io.Discard, s.limited(c))
		s.bytesIn.Add(n)
	case Source:
		s.source(c)
	case Hold:
		var b [1]byte
		for {
			n, err := c.Read(b[:])
			s.bytesIn.Add(int64(n))
			if err != nil {
				return
			}
		}
	}
	if tc, ok := c.(*tls.Conn); ok {
		tc.CloseWrite()
	}
}

func (s *Server) echo(c net.Conn) {
	buf := make([]byte, 32<<10)
	r := s.limited(c)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			s.bytesIn.Add(int64(n))
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
			s.bytesOut.Add(int64(n))
		}
		if err != nil {
			return
		}
	}
}

func (s *Server) source(c net.Conn) {
	buf := make([]byte, 32<<10)
	for i := range buf {
		buf[i] = Pattern(int64(i))
	}
	left := s.cfg.SourceBytes
	var off int64
	for left > 0 {
		// The pattern repeats every 251 bytes; keep chunks aligned to it.
		start := off % 251
		chunk := buf[start:]
		if int64(len(chunk)) > left {
			chunk = chunk[:left]
		}
		n, err := c.Write(chunk)
		s.bytesOut.Add(int64(n))
		off += int64(n)
		left -= int64(n)
		if err != nil {
			return
		}
	}
}

// Pattern is the byte a Source server sends at offset i: a period of 251
// (prime, so it never lines up with buffer sizes), for checking integrity.
func Pattern(i int64) byte { return byte(i % 251) }

// limited returns a reader over c that reads at most cfg.ReadRate bytes per
// second when ReadRate is set.
func (s *Server) limited(c net.Conn) io.Reader {
	if s.cfg.ReadRate <= 0 {
		return c
	}
	return &rateReader{r: c, rate: s.cfg.ReadRate, start: time.Now()}
}

type rateReader struct {
	r     io.Reader
	rate  int64
	start time.Time
	n     int64
}

func (r *rateReader) Read(p []byte) (int, error) {
	// Read in slices of a tenth of a second's worth so the rate is smooth.
	max := r.rate / 10
	if max < 1 {
		max = 1
	}
	if int64(len(p)) > max {
		p = p[:max]
	}
	due := r.start.Add(time.Duration(float64(r.n) / float64(r.rate) * float64(time.Second)))
	if d := time.Until(due); d > 0 {
		time.Sleep(d)
	}
	n, err := r.r.Read(p)
	r.n += int64(n)
	return n, err
}
