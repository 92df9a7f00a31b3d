package tlsbridge

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/pki"
)

// captureConn is the server's socket in the driver fuzz target: once
// capture is set, what the server's tls.Conn writes (its records after the
// handshake) is kept in buf instead of sent, so that the target decides
// which bytes, valid or not, reach the client's Source and in what slices.
type captureConn struct {
	net.Conn
	capture bool
	buf     bytes.Buffer
}

func (c *captureConn) Write(p []byte) (int, error) {
	if c.capture {
		return c.buf.Write(p)
	}
	return c.Conn.Write(p)
}

// take returns what the server wrote since the last take.
func (c *captureConn) take() []byte {
	b := bytes.Clone(c.buf.Bytes())
	c.buf.Reset()
	return b
}

// discardSink takes the client's records (its close_notify, alerts).
type discardSink struct{}

func (discardSink) Write(p []byte) (int, error) { return len(p), nil }

// fuzzPeers is the loopback listener of the fuzz target, one per process.
type fuzzPeers struct {
	set  *pki.Set
	ln   net.Listener
	once sync.Once
	err  error
}

func (fp *fuzzPeers) start() error {
	fp.once.Do(func() {
		if fp.set, fp.err = pki.NewSet(pki.ECDSAP256, 1); fp.err != nil {
			return
		}
		fp.ln, fp.err = net.Listen("tcp", "127.0.0.1:0")
	})
	return fp.err
}

// handshake connects a client Conn to a fresh server over loopback with
// version v and returns both, the client detached onto src; the server's
// later writes are captured. No tickets: nothing crosses the socket after
// the handshake that the client has not read.
func (fp *fuzzPeers) handshake(t *testing.T, v uint16, src Source) (*Conn, *tls.Conn, *captureConn) {
	t.Helper()
	type served struct {
		tc  *tls.Conn
		cc  *captureConn
		err error
	}
	ch := make(chan served, 1)
	go func() {
		raw, err := fp.ln.Accept()
		if err != nil {
			ch <- served{err: err}
			return
		}
		cfg := fp.set.ServerConfig()
		cfg.ClientAuth = tls.NoClientCert
		cfg.SessionTicketsDisabled = true
		cfg.MinVersion, cfg.MaxVersion = v, v
		cc := &captureConn{Conn: raw}
		tc := tls.Server(cc, cfg)
		raw.SetDeadline(time.Now().Add(10 * time.Second))
		err = tc.Handshake()
		ch <- served{tc, cc, err}
	}()
	raw, err := net.Dial("tcp", fp.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	c := NewConn(raw, &tls.Config{RootCAs: pki.Pool(fp.set.Root), ServerName: "localhost", MinVersion: v, MaxVersion: v})
	if err := c.Handshake(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	s := <-ch
	if s.err != nil {
		t.Fatalf("server handshake: %v", s.err)
	}
	t.Cleanup(func() { s.cc.Conn.Close() })
	s.cc.capture = true
	c.Detach(src, discardSink{})
	return c, s.tc, s.cc
}

// FuzzDriverUpstreamBytes drives the record driver, after a real handshake
// over loopback (TLS 1.2 or 1.3 by the first byte), with adversarial
// upstream bytes. The rest of the input is a program: valid application
// records the server really encrypts, raw bytes, valid records with a bit
// flipped, the server's close_notify, and deliveries of what was written so
// far to the Source in slices of a chosen size, each followed by reads, as
// the event loop does on OnTraffic. Whatever the bytes:
//
//   - Read never panics and never returns more than asked;
//   - the plaintext is always a prefix of what the server encrypted: the
//     driver neither invents, drops, reorders nor repeats bytes;
//   - with nothing but valid records, all of it arrives, and after the
//     server's close_notify Read returns io.EOF;
//   - an error other than ErrWouldBlock is final: the next Read fails too;
//   - Write and CloseWrite after any of it do not panic.
func FuzzDriverUpstreamBytes(f *testing.F) {
	f.Add([]byte{0, 0, 10, 4, 3})                                                       // TLS 1.2: 11 bytes, one slice of 4
	f.Add([]byte{1, 0, 200, 0, 50, 4, 0, 3, 4, 255})                                    // TLS 1.3: two records, close_notify
	f.Add([]byte{1, 0, 5, 1, 5, 23, 3, 3, 0x48, 0, 4, 1})                               // an oversized record header
	f.Add([]byte{0, 0, 5, 2, 17, 3, 4, 2})                                              // a record with a bit flipped
	f.Add([]byte{1, 1, 3, 0x80, 0x2e, 0x01, 0, 7, 4, 0})                                // an SSLv2 header, byte by byte
	f.Add([]byte{1, 0, 255, 0, 255, 0, 255, 4, 0, 0, 1, 4, 6, 1, 6, 21, 3, 3, 0, 2, 2}) // records, slices, a plaintext alert
	fp := &fuzzPeers{}
	f.Cleanup(func() {
		if fp.ln != nil {
			fp.ln.Close()
		}
	})
	f.Fuzz(func(t *testing.T, prog []byte) {
		if len(prog) == 0 || len(prog) > 4096 {
			return
		}
		if err := fp.start(); err != nil {
			t.Fatal(err)
		}
		v := uint16(tls.VersionTLS12)
		if prog[0]&1 == 1 {
			v = tls.VersionTLS13
		}
		src := &memSource{}
		c, srv, cc := fp.handshake(t, v, src)

		var (
			stream   []byte // bytes written toward the client, not yet delivered
			written  []byte // plaintext the server encrypted, in order
			got      []byte // plaintext the client read
			clean    = true // only valid records so far
			notified bool   // the server sent close_notify
			final    error  // the client's first error other than ErrWouldBlock
		)
		pattern := func(n int) []byte {
			p := make([]byte, n)
			for i := range p {
				p[i] = byte(len(written) + i)
			}
			return p
		}
		buf := make([]byte, 1500)
		readAll := func() {
			for final == nil {
				n, err := c.Read(buf)
				if n < 0 || n > len(buf) {
					t.Fatalf("Read returned %d for a buffer of %d", n, len(buf))
				}
				got = append(got, buf[:n]...)
				if errors.Is(err, ErrWouldBlock) {
					return
				}
				if err != nil {
					final = err
					return
				}
				if n == 0 {
					return
				}
			}
		}
		deliver := func(slice int) {
			for len(stream) > 0 && final == nil {
				k := min(slice, len(stream))
				src.buf = append(src.buf, stream[:k]...)
				stream = stream[k:]
				readAll()
			}
		}
		next := func(i *int) int {
			if *i >= len(prog) {
				return 0
			}
			b := prog[*i]
			*i++
			return int(b)
		}
		for i := 1; i < len(prog); {
			switch op := next(&i) % 5; op {
			case 0: // a valid application record
				n := next(&i) + 1
				if notified {
					continue
				}
				p := pattern(n)
				if _, err := srv.Write(p); err != nil {
					t.Fatalf("server write: %v", err)
				}
				written = append(written, p...)
				stream = append(stream, cc.take()...)
			case 1: // raw bytes from the program
				n := next(&i)
				end := min(i+n, len(prog))
				stream = append(stream, prog[i:end]...)
				i = end
				clean = false
			case 2: // a valid record with one bit flipped
				k, bit := next(&i), next(&i)%8
				if notified {
					continue
				}
				p := pattern(16)
				if _, err := srv.Write(p); err != nil {
					t.Fatalf("server write: %v", err)
				}
				written = append(written, p...)
				r := cc.take()
				r[k%len(r)] ^= 1 << bit
				stream = append(stream, r...)
				clean = false
			case 3: // close_notify
				if !notified {
					srv.CloseWrite()
					stream = append(stream, cc.take()...)
					notified = true
				}
			case 4: // deliver what is pending, in slices
				deliver(next(&i) + 1)
			}
		}
		deliver(7)
		readAll()

		if !bytes.HasPrefix(written, got) {
			t.Fatalf("the client read %d bytes that are not a prefix of the %d the server encrypted", len(got), len(written))
		}
		if clean {
			if !bytes.Equal(got, written) {
				t.Fatalf("only valid records, yet the client read %d of %d bytes (error %v)", len(got), len(written), final)
			}
			if notified && final != io.EOF {
				t.Fatalf("after the server's close_notify: %v, want io.EOF", final)
			}
			if !notified && final != nil {
				t.Fatalf("only valid records, yet Read failed: %v", final)
			}
		}
		if final != nil {
			if _, err := c.Read(buf); err == nil || errors.Is(err, ErrWouldBlock) {
				t.Fatalf("after %v the next Read returned %v: the error did not stick", final, err)
			}
		}
		c.Write([]byte("after"))
		c.CloseWrite()
	})
}
