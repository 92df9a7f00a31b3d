package bench

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/backend"
)

// The load generators against plaintext Go servers, no proxy in between.

func TestRunConnLoad(t *testing.T) {
	s, err := backend.Start(backend.Config{Mode: backend.Echo})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := RunConnLoad(t.Context(), ConnLoad{Addr: s.Addr(), Workers: 4, MaxConns: 200, Duration: 10 * time.Second})
	if r.Conns != 200 || r.Errors != 0 || len(r.Latencies) != 200 {
		t.Fatalf("got %d conns, %d errors (%v), %d latencies; want 200, 0, 200", r.Conns, r.Errors, r.FirstErr, len(r.Latencies))
	}
	// Bounded by time: a round far shorter than its count allows.
	r = RunConnLoad(t.Context(), ConnLoad{Addr: s.Addr(), Workers: 2, MaxConns: 1 << 30, Duration: 100 * time.Millisecond})
	if r.Elapsed > 2*time.Second || r.Conns == 0 {
		t.Fatalf("time-bounded round: %d conns in %v", r.Conns, r.Elapsed)
	}
}

func TestRunConnLoadErrors(t *testing.T) {
	addr, err := FreePort() // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	r := RunConnLoad(t.Context(), ConnLoad{Addr: addr, Workers: 2, MaxConns: 10, Duration: 5 * time.Second})
	if r.Conns != 0 || r.Errors != 10 || r.FirstErr == nil {
		t.Fatalf("got %d conns, %d errors, %v", r.Conns, r.Errors, r.FirstErr)
	}
}

func TestRunStreams(t *testing.T) {
	const size = 3 << 20
	s, err := backend.Start(backend.Config{Mode: backend.Source, SourceBytes: size})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, err := RunStreams(t.Context(), s.Addr(), 4, size, 30*time.Second)
	if err != nil || r.Bytes != 4*size {
		t.Fatalf("got %d bytes, %v; want %d", r.Bytes, err, 4*size)
	}
	if _, err := RunStreams(t.Context(), s.Addr(), 1, size+1, 30*time.Second); err == nil {
		t.Error("short stream: no error")
	}
}

func TestHolder(t *testing.T) {
	s, err := backend.Start(backend.Config{Mode: backend.Echo})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var h Holder
	defer h.Close()
	if err := h.Open(t.Context(), s.Addr(), 30, 8); err != nil {
		t.Fatal(err)
	}
	if err := h.Open(t.Context(), s.Addr(), 20, 8); err != nil {
		t.Fatal(err)
	}
	if h.Len() != 50 {
		t.Fatalf("holding %d, want 50", h.Len())
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().Active != 50 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if a := s.Stats().Active; a != 50 {
		t.Fatalf("server sees %d connections, want 50", a)
	}
	h.Close()
	if h.Len() != 0 {
		t.Fatalf("holding %d after Close", h.Len())
	}
}

func TestProgressLog(t *testing.T) {
	var b bytes.Buffer
	p := NewProgress(&b, false)
	p.SetTotal(2)
	p.Step("crypto: X", false, "")
	p.Step("handshake · NGINX", false, "")
	p.Step("handshake · NGINX", true, "812 µs/conn")
	p.Finish()
	out := b.String()
	if !strings.Contains(out, "[1/2 ") || !strings.Contains(out, "crypto: X") ||
		!strings.Contains(out, "[2/2 ") || !strings.Contains(out, "handshake · NGINX: 812 µs/conn") {
		t.Errorf("progress log:\n%s", out)
	}
	if strings.Count(out, "\n") != 2 || strings.Contains(out, "\r") {
		t.Errorf("want two plain lines without a bar:\n%q", out)
	}
}
