package bench

import (
	"io"
	"net"
	"sync"
	"time"
)

// memPipe returns the two ends of an in-memory, buffered, full-duplex
// connection. Unlike net.Pipe, a Write never waits for the peer's Read, so
// two TLS endpoints that flush at the same moment (as TLS 1.3 resumption
// does) do not deadlock. Deadlines are accepted and ignored.
func memPipe() (net.Conn, net.Conn) {
	a, b := newMemBuf(), newMemBuf()
	return &memConn{r: a, w: b}, &memConn{r: b, w: a}
}

type memBuf struct {
	mu     sync.Mutex
	cond   *sync.Cond
	data   []byte
	closed bool
}

func newMemBuf() *memBuf {
	m := &memBuf{}
	m.cond = sync.NewCond(&m.mu)
	return m
}

func (m *memBuf) close() {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	m.cond.Broadcast()
}

type memConn struct{ r, w *memBuf }

func (c *memConn) Read(p []byte) (int, error) {
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	for len(c.r.data) == 0 && !c.r.closed {
		c.r.cond.Wait()
	}
	if len(c.r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.r.data)
	c.r.data = c.r.data[n:]
	return n, nil
}

func (c *memConn) Write(p []byte) (int, error) {
	c.w.mu.Lock()
	if c.w.closed {
		c.w.mu.Unlock()
		return 0, io.ErrClosedPipe
	}
	c.w.data = append(c.w.data, p...)
	c.w.mu.Unlock()
	c.w.cond.Broadcast()
	return len(p), nil
}

func (c *memConn) Close() error {
	c.r.close()
	c.w.close()
	return nil
}

type memAddr struct{}

func (memAddr) Network() string { return "mem" }
func (memAddr) String() string  { return "mem" }

func (c *memConn) LocalAddr() net.Addr              { return memAddr{} }
func (c *memConn) RemoteAddr() net.Addr             { return memAddr{} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

var _ net.Conn = (*memConn)(nil)
