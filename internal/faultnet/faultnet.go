// Package faultnet provides peers that misbehave on purpose, for the fault
// tests of the proxy: upstreams that break the TLS handshake or the stream
// in one precise way (random bytes for a ServerHello, a reset in the middle
// of the handshake or of the stream, data after close_notify, a stall after
// the ServerHello, oversized or malformed records), and clients that
// connect and never send, trickle one byte at a time, or reset while the
// proxy is still dialing.
//
// Everything listens on 127.0.0.1 port 0. Each upstream connection runs on
// its own goroutine, is bounded by Config.Deadline, and is closed by
// Upstream.Close, which waits for those goroutines: a test that closes its
// upstreams leaves none behind. An Upstream is safe for concurrent use.
package faultnet

import (
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Fault is what an upstream does to each connection.
type Fault int

// Faults. Those that complete the handshake first echo Config.Echo bytes
// of application data, so that the proxy's session is established and
// bytes have flowed when the fault strikes.
const (
	// Echo is no fault: handshake and echo every byte until the peer
	// closes, after waiting Config.Delay (a slow upstream).
	Echo Fault = iota
	// RandomReply reads the ClientHello and answers it with
	// Config.RandomLen random bytes, then closes. The first byte is
	// never a TLS record type nor an SSLv2 header's 0x80, so a TLS client
	// always sees a peer that does not speak TLS.
	RandomReply
	// ResetInHandshake sends the real ServerHello record, then resets the
	// connection (RST).
	ResetInHandshake
	// StallAfterServerHello sends the real ServerHello record and then
	// nothing more, until the peer gives up or the deadline passes.
	StallAfterServerHello
	// ResetMidStream completes the handshake, echoes Config.Echo bytes,
	// then resets the connection (RST) without close_notify.
	ResetMidStream
	// CloseNotifyThenData completes the handshake, echoes Config.Echo
	// bytes, sends close_notify, then writes Config.Raw on the socket as
	// if the stream went on; it then waits for the peer to close.
	CloseNotifyThenData
	// RawAfterHandshake completes the handshake, echoes Config.Echo
	// bytes, then writes Config.Raw on the socket below TLS (an oversized
	// or malformed record, see Record) and waits for the peer to close.
	RawAfterHandshake
	// NeverAnswers accepts and never writes: a TLS client's ClientHello gets no
	// answer. It reads and drops what comes until the peer closes, so that
	// Open sees the connections the peer still holds. It needs no TLS
	// configuration.
	NeverAnswers
)

// String names the fault, for test names.
func (f Fault) String() string {
	switch f {
	case Echo:
		return "echo"
	case RandomReply:
		return "random-reply"
	case ResetInHandshake:
		return "reset-in-handshake"
	case StallAfterServerHello:
		return "stall-after-serverhello"
	case ResetMidStream:
		return "reset-mid-stream"
	case CloseNotifyThenData:
		return "close-notify-then-data"
	case RawAfterHandshake:
		return "raw-after-handshake"
	case NeverAnswers:
		return "never-answers"
	}
	return fmt.Sprintf("Fault(%d)", int(f))
}

// Config describes one misbehaving upstream.
type Config struct {
	Fault Fault
	// TLS is the server's configuration; every fault but RandomReply
	// needs it.
	TLS *tls.Config
	// Echo is how many bytes of application data are echoed before a
	// fault that strikes after the handshake (ResetMidStream,
	// CloseNotifyThenData, RawAfterHandshake).
	Echo int
	// Raw is written below TLS by RawAfterHandshake and
	// CloseNotifyThenData.
	Raw []byte
	// RandomLen is the length of RandomReply's answer; 0: 512.
	RandomLen int
	// Delay is how long Echo waits before its handshake.
	Delay time.Duration
	// Deadline bounds every connection; 0: 60 s.
	Deadline time.Duration
}

// Upstream is a listening misbehaving upstream.
type Upstream struct {
	cfg Config
	ln  net.Listener

	accepted, struck atomic.Int64

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
	// done is closed by Close: a delayed Echo stops waiting.
	done chan struct{}
}

// Start listens on 127.0.0.1:0 and serves cfg's fault on every connection
// until Close.
func Start(cfg Config) (*Upstream, error) {
	if cfg.Fault != RandomReply && cfg.Fault != NeverAnswers && cfg.TLS == nil {
		return nil, fmt.Errorf("starting a %v upstream: it needs a TLS configuration", cfg.Fault)
	}
	if cfg.Deadline <= 0 {
		cfg.Deadline = 60 * time.Second
	}
	if cfg.RandomLen <= 0 {
		cfg.RandomLen = 512
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for a %v upstream: %w", cfg.Fault, err)
	}
	u := &Upstream{cfg: cfg, ln: ln, conns: map[net.Conn]struct{}{}, done: make(chan struct{})}
	u.wg.Add(1)
	go u.accept()
	return u, nil
}

// Addr returns the upstream's address, "127.0.0.1:port".
func (u *Upstream) Addr() string { return u.ln.Addr().String() }

// Accepted returns how many connections the upstream accepted.
func (u *Upstream) Accepted() int64 { return u.accepted.Load() }

// Struck returns how many connections got the fault (for Echo: how many
// completed the handshake).
func (u *Upstream) Struck() int64 { return u.struck.Load() }

// Open returns how many of the connections the upstream accepted are still
// open (the peer has not closed them).
func (u *Upstream) Open() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.conns)
}

// Close stops listening, closes every connection and waits for their
// goroutines.
func (u *Upstream) Close() error {
	err := u.ln.Close()
	u.mu.Lock()
	if !u.closed {
		close(u.done)
	}
	u.closed = true
	for c := range u.conns {
		c.Close()
	}
	u.mu.Unlock()
	u.wg.Wait()
	return err
}

func (u *Upstream) accept() {
	defer u.wg.Done()
	for {
		c, err := u.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // EMFILE and the like
			continue
		}
		u.accepted.Add(1)
		u.mu.Lock()
		if u.closed {
			u.mu.Unlock()
			c.Close()
			return
		}
		u.conns[c] = struct{}{}
		u.wg.Add(1)
		u.mu.Unlock()
		go u.serve(c.(*net.TCPConn))
	}
}

func (u *Upstream) serve(raw *net.TCPConn) {
	defer u.wg.Done()
	defer func() {
		raw.Close()
		u.mu.Lock()
		delete(u.conns, raw)
		u.mu.Unlock()
	}()
	raw.SetDeadline(time.Now().Add(u.cfg.Deadline))
	switch u.cfg.Fault {
	case NeverAnswers:
		u.struck.Add(1)
		io.Copy(io.Discard, raw) // until the peer closes or resets it
		return
	case RandomReply:
		if !readClientHello(raw) {
			return
		}
		b := make([]byte, u.cfg.RandomLen)
		rand.Read(b)
		// A first byte that is a TLS record type, or 0x80 (an SSLv2
		// header), would give the client another error than "not TLS"
		// once in a hundred runs or so: the reply is garbage, never a
		// record header.
		if len(b) > 0 && (b[0] >= 0x14 && b[0] <= 0x18 || b[0] == 0x80) {
			b[0] ^= 0x40
		}
		u.struck.Add(1)
		raw.Write(b)
		return
	case ResetInHandshake, StallAfterServerHello:
		fr := &firstRecord{Conn: raw}
		tc := tls.Server(fr, u.cfg.TLS)
		fr.onFirst = func() {
			u.struck.Add(1)
			if u.cfg.Fault == ResetInHandshake {
				Reset(raw)
			}
		}
		tc.Handshake() // fails once the peer gives up, or at the deadline
		return
	case Echo:
		if u.cfg.Delay > 0 {
			t := time.NewTimer(u.cfg.Delay)
			select {
			case <-t.C:
			case <-u.done:
				t.Stop()
				return
			}
		}
	}
	tc := tls.Server(raw, u.cfg.TLS)
	if err := tc.Handshake(); err != nil {
		return
	}
	if u.cfg.Fault == Echo {
		u.struck.Add(1)
		io.Copy(tc, tc)
		tc.CloseWrite()
		return
	}
	if u.cfg.Echo > 0 {
		buf := make([]byte, u.cfg.Echo)
		if _, err := io.ReadFull(tc, buf); err != nil {
			return
		}
		if _, err := tc.Write(buf); err != nil {
			return
		}
	}
	u.struck.Add(1)
	switch u.cfg.Fault {
	case ResetMidStream:
		Reset(raw)
		return
	case CloseNotifyThenData:
		tc.CloseWrite()
		raw.Write(u.cfg.Raw)
	case RawAfterHandshake:
		raw.Write(u.cfg.Raw)
	}
	io.Copy(io.Discard, raw) // until the peer closes
}

// readClientHello reads one TLS record (the ClientHello). It reports
// whether a whole record came.
func readClientHello(c net.Conn) bool {
	var h [5]byte
	if _, err := io.ReadFull(c, h[:]); err != nil || h[0] != 22 {
		return false
	}
	n := int(h[3])<<8 | int(h[4])
	_, err := io.CopyN(io.Discard, c, int64(n))
	return err == nil
}

// firstRecord is the net.Conn under a tls.Server that lets only the
// server's first record (the ServerHello) reach the socket: onFirst runs
// once it has, and later writes are swallowed.
type firstRecord struct {
	net.Conn
	pending []byte // bytes of the first record not yet complete
	done    bool
	onFirst func()
}

func (f *firstRecord) Write(p []byte) (int, error) {
	if f.done {
		return len(p), nil
	}
	f.pending = append(f.pending, p...)
	if len(f.pending) < 5 {
		return len(p), nil
	}
	n := 5 + (int(f.pending[3])<<8 | int(f.pending[4]))
	if len(f.pending) < n {
		return len(p), nil
	}
	f.done = true
	if _, err := f.Conn.Write(f.pending[:n]); err != nil {
		return 0, err
	}
	f.pending = nil
	f.onFirst()
	return len(p), nil
}

// Reset closes c with a TCP reset (SO_LINGER 0) instead of a FIN.
func Reset(c *net.TCPConn) {
	c.SetLinger(0)
	c.Close()
}

// Record returns a TLS record of type typ (23: application data, 21:
// alert, 22: handshake) with version 0x0303 and body as its payload.
func Record(typ byte, body []byte) []byte {
	return append(RecordHeader(typ, len(body)), body...)
}

// RecordHeader returns a record header announcing n bytes of payload; n
// may exceed what TLS allows (2^14 + 256 in TLS 1.3), for an oversized
// record.
func RecordHeader(typ byte, n int) []byte {
	return []byte{typ, 3, 3, byte(n >> 8), byte(n)}
}
