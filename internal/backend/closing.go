package backend

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// Closing is a TLS echo server on 127.0.0.1:0 that can close every
// connection it holds, as an upstream with a short idle timeout does. It
// counts completed handshakes. Safe for concurrent use; each connection
// runs on its own goroutine.
type Closing struct {
	ln         net.Listener
	handshakes atomic.Int64
	mu         sync.Mutex
	conns      map[*tls.Conn]bool // guarded by mu
	wg         sync.WaitGroup
}

// StartClosing starts a Closing server with cfg (which says whether a
// client certificate is required).
func StartClosing(cfg *tls.Config) (*Closing, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	u := &Closing{ln: ln, conns: map[*tls.Conn]bool{}}
	u.wg.Add(1)
	go u.accept(cfg)
	return u, nil
}

// accept runs on the server's accept goroutine.
func (u *Closing) accept(cfg *tls.Config) {
	defer u.wg.Done()
	for {
		c, err := u.ln.Accept()
		if err != nil {
			return
		}
		tc := tls.Server(c, cfg)
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			defer tc.Close()
			if tc.Handshake() != nil {
				return
			}
			u.mu.Lock()
			u.conns[tc] = true
			u.mu.Unlock()
			u.handshakes.Add(1)
			io.Copy(tc, tc)
			u.mu.Lock()
			delete(u.conns, tc)
			u.mu.Unlock()
		}()
	}
}

// Addr is the server's address, host:port.
func (u *Closing) Addr() string { return u.ln.Addr().String() }

// Handshakes counts the handshakes completed so far.
func (u *Closing) Handshakes() int64 { return u.handshakes.Load() }

// Open counts the connections open now (handshaken and not yet ended).
func (u *Closing) Open() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.conns)
}

// CloseAll closes every connection open now and returns how many; it
// returns once their close_notify and FIN are sent.
func (u *Closing) CloseAll() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := len(u.conns)
	for c := range u.conns {
		c.Close()
		delete(u.conns, c)
	}
	return n
}

// Close stops accepting, closes what is open and waits for every
// connection's goroutine.
func (u *Closing) Close() {
	u.ln.Close()
	u.CloseAll()
	u.wg.Wait()
}
