package listen

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/engine/errlog"
)

// client is one client a test handler was given.
type client struct {
	fd     int
	remote net.Addr
	c      net.Conn
	at     time.Time
}

// recorder is a Handler that passes each client to a channel and reports
// outOfFDs as told.
type recorder struct {
	got      chan client
	outOfFDs atomic.Bool
}

func (r *recorder) FD(fd int, remote net.Addr) bool {
	out := r.outOfFDs.Load()
	r.got <- client{fd: fd, remote: remote, at: time.Now()}
	return out
}

func (r *recorder) Conn(c net.Conn) bool {
	out := r.outOfFDs.Load()
	r.got <- client{fd: -1, c: c, remote: c.RemoteAddr(), at: time.Now()}
	return out
}

// logBuffer is a log the test reads.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// serve starts s's accept loop under g and returns what ends it: Close,
// then a wait for Serve to return.
func serve(t *testing.T, s *Socket, g *Gate, h Handler) (stop func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		s.Serve(g, h)
		close(done)
	}()
	return func() {
		s.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Serve did not return after Close")
		}
	}
}

func next(t *testing.T, r *recorder) client {
	t.Helper()
	select {
	case c := <-r.got:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no client handed over")
		return client{}
	}
}

// TestServeTCP: a TCP client is handed over bare, with its addresses;
// after a pause (descriptors ran out) the next clients wait in the
// backlog for acceptRetry; a handler that runs out of descriptors pauses
// accepting too; Close ends Serve.
func TestServeTCP(t *testing.T) {
	s, err := Open(conf.Listen{Addr: "127.0.0.1:0", Network: "tcp"}, 0, nil, errlog.New(&logBuffer{}, errlog.LevelInfo))
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{got: make(chan client, 4)}
	g := &Gate{}
	stop := serve(t, s, g, r)
	defer stop()
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	c := dial()
	got := next(t, r)
	if got.fd < 0 || got.remote.String() != c.LocalAddr().String() {
		t.Fatalf("handed fd %d from %v, want a bare socket from %v", got.fd, got.remote, c.LocalAddr())
	}
	if local, err := s.LocalAddr(got.fd); err != nil || local.String() != c.RemoteAddr().String() {
		t.Errorf("LocalAddr = %v, %v; want %v", local, err, c.RemoteAddr())
	}
	unix.Close(got.fd)

	for _, how := range []string{"Pause", "the handler"} {
		start := time.Now()
		if how == "Pause" {
			// From another goroutine: the accept under way takes one
			// more client; the pause holds the ones after it.
			g.Pause()
			dial()
			unix.Close(next(t, r).fd)
		} else {
			r.outOfFDs.Store(true) // for the client below
			dial()
			unix.Close(next(t, r).fd)
			r.outOfFDs.Store(false)
			start = time.Now()
		}
		dial()
		got := next(t, r)
		unix.Close(got.fd)
		if wait := got.at.Sub(start); wait < acceptRetry-100*time.Millisecond {
			t.Errorf("after %s paused accepting, the next client was handed over in %v, before %v", how, wait, acceptRetry)
		}
	}
}

// TestServeUnix: a unix domain socket's stale file is removed at Open,
// its clients are handed over through net, and Drop deletes its file.
func TestServeUnix(t *testing.T) {
	dir, err := os.MkdirTemp("", "listen") // short: sun_path holds 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "s.sock")
	// A stale socket: bound, nobody accepts on it.
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	var log logBuffer
	s, err := Open(conf.Listen{Addr: "unix:" + path, Network: "unix"}, 0, nil, errlog.New(&log, errlog.LevelInfo))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "removed the stale socket "+path) {
		t.Errorf("no notice of the stale socket:\n%s", log.String())
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o666 {
		t.Errorf("socket file %v, %v; want mode 0666", fi, err)
	}
	r := &recorder{got: make(chan client, 1)}
	stop := serve(t, s, &Gate{}, r)
	defer stop()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := next(t, r); got.c == nil {
		t.Fatalf("handed fd %d, want a net.Conn", got.fd)
	} else {
		got.c.Close()
	}
	s.Drop()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("after Drop the file is still there: %v", err)
	}
	if !strings.Contains(log.String(), "deleting socket "+path) {
		t.Errorf("Drop did not warn:\n%s", log.String())
	}
}

// TestOpenTaken: an address another socket holds is refused with NGINX's
// message and the directive's position; Func supplies the socket when
// set.
func TestOpenTaken(t *testing.T) {
	first, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	addr := first.Addr().String()
	l := conf.Listen{Addr: addr, Network: "tcp", Pos: conf.Pos{File: "t.conf", Line: 3}}
	log := errlog.New(&logBuffer{}, errlog.LevelInfo)
	_, err = Open(l, 0, nil, log)
	if want := "bind() to " + addr + " failed (98: Address already in use) in t.conf:3"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Open of a taken address: %v, want %q", err, want)
	}
	var asked string
	s, err := Open(l, 1, func(network, a string, create func(network, addr string) (net.Listener, error)) (net.Listener, error) {
		asked = network + " " + a
		return create(network, "127.0.0.1:0")
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if asked != "tcp "+addr+"#1" {
		t.Errorf("Func asked for %q, want the second reuseport copy of %s", asked, addr)
	}
}
