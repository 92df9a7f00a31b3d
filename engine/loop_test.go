package engine

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/engine/memory"
	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
)

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

// TestMemReleasedAfterSessionsEnd drives sessions through a real engine
// on real sockets with a keeper fed by the engine's counters, as the
// ticker feeds its own: held sessions closed with no client after them
// are released, after the release that followed their arrival.
func TestMemReleasedAfterSessionsEnd(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	tb := startEngine(t, dir, guideConf(ups, ""))
	m := tb.eng.Metrics()

	type release struct {
		accepted uint64
		active   int64
	}
	released := make(chan release, 8)
	k := memory.NewKeeper(time.Now(), func() {
		memory.FreeOSMemory()
		released <- release{m.Accepted(), m.Active()}
	})
	stop := make(chan struct{})
	ticked := make(chan struct{})
	go func() { // the ticker goroutine of this keeper
		defer close(ticked)
		tick := time.NewTicker(memory.CheckEvery)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case now := <-tick.C:
				k.Sessions(now, m.Accepted(), m.Active())
			}
		}
	}()
	defer func() { close(stop); <-ticked }()

	const n = 100
	payload := bytes.Repeat([]byte("held session "), 5000)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := net.Dial("tcp", tb.addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.Write(payload); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, len(payload))); err != nil {
			t.Fatal(err)
		}
	}
	// A burst's worth of allocation, so that a release follows the
	// arrivals while the sessions are held.
	sink := make([]byte, memory.Burst+(8<<20))
	runtime.KeepAlive(sink)
	wait := func(what string) release {
		t.Helper()
		select {
		case r := <-released:
			return r
		case <-time.After(20 * time.Second): // a bound for a broken keeper, not a sync
			t.Fatalf("no release %s within 20 s", what)
			return release{}
		}
	}
	if r := wait("after the arrivals"); r.active < n {
		t.Fatalf("first release with %d sessions active, want the %d held", r.active, n)
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	if r := wait("after the sessions ended"); r.active != 0 {
		t.Fatalf("released with %d sessions active, want 0", r.active)
	}
}
