package engine

import (
	"context"
	"errors"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
)

// TestRawAcceptor: a client accepted without net has the addresses a
// net.Conn would have had (from the listener or, for a wildcard listener,
// from getsockname), TCP_NODELAY inherited from the listener, and no
// registration with Go's netpoller; closing the acceptor ends a waiting
// accept with net.ErrClosed.
func TestRawAcceptor(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a := newRawAcceptor(ln)
	if a == nil {
		t.Fatal("no acceptor for a TCP listener")
	}
	for _, wildcard := range []bool{false, true} {
		if wildcard {
			a.local = nil // as for 0.0.0.0: ask the socket
		}
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fd, remote, err := a.accept()
		if err != nil {
			t.Fatal(err)
		}
		local, err := a.localAddr(fd)
		if err != nil {
			t.Fatal(err)
		}
		if remote.String() != c.LocalAddr().String() || local.String() != c.RemoteAddr().String() {
			t.Errorf("wildcard %v: accepted %v -> %v, the client is %v -> %v", wildcard, remote, local, c.LocalAddr(), c.RemoteAddr())
		}
		if v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY); err != nil || v == 0 {
			t.Errorf("TCP_NODELAY on the accepted socket = %d, %v; want on", v, err)
		}
		if fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK == 0 {
			t.Errorf("accepted socket flags %#x, %v: want O_NONBLOCK", fl, err)
		}
		unix.Close(fd)
		c.Close()
	}
	if newRawAcceptor(&net.UnixListener{}) != nil {
		t.Error("an acceptor for a unix listener")
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := a.accept()
		done <- err
	}()
	a.close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("accept after close: %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("closing the acceptor did not end its accept")
	}
}

// TestAdoptFailure: a descriptor the loop cannot register (a regular
// file: epoll refuses it) is reported through the failure callback, on
// the loop (gnet closes it), and the engine goes on serving.
func TestAdoptFailure(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	tb := startEngine(t, dir, guideConf(ups, ""))
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	failed := make(chan error, 1)
	remote := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
	el := tb.eng.loops[0].el
	if err := el.Adopt(gnet.NewContext(context.Background(), struct{}{}), fd, remote, remote, func(err error) { failed <- err }); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-failed:
		if !errors.Is(err, unix.EPERM) {
			t.Errorf("failure %v, want EPERM from epoll_ctl", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the failure was never reported")
	}
	if got, err := echoOnce(tb.eng.Addrs()[0].String(), []byte("after"), 10*time.Second); err != nil || string(got) != "after" {
		t.Errorf("echo after the failure: %q, %v", got, err)
	}
}

// TestLoopsPinned: with worker_cpu_affinity auto each loop runs locked to
// a thread pinned to its CPU (lockLoops), so a task it runs reads that
// affinity; lockLoops asks for the lock only when there is pinning.
func TestLoopsPinned(t *testing.T) {
	if lockLoops(conf.CPUAffinity{}) || !lockLoops(conf.CPUAffinity{Auto: true}) || !lockLoops(conf.CPUAffinity{Masks: []uint64{1}}) {
		t.Fatal("lockLoops: locked without pinning, or not with it")
	}
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	tb := startEngine(t, dir, strings.Replace(guideConf(ups, ""), "worker_processes 2;", "worker_processes 2;\nworker_cpu_affinity auto;", 1))
	for i, lp := range tb.eng.loops {
		got := make(chan unix.CPUSet, 1)
		err := lp.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			var cs unix.CPUSet
			unix.SchedGetaffinity(0, &cs)
			got <- cs
			return nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		var want unix.CPUSet
		want.Set(i % runtime.NumCPU())
		select {
		case cs := <-got:
			if cs != want {
				t.Errorf("loop %d runs on a thread with affinity %v, want %v", i, cs, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("loop %d never ran the task", i)
		}
	}
}
