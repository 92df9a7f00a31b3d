package engine

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/faultnet"
	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
	"github.com/tlsrelay/tlsrelay/pool"
	"github.com/tlsrelay/tlsrelay/pool/dial"
)

// exhaustFDs uses up every descriptor the process may open: it lowers the
// soft RLIMIT_NOFILE to a little above the highest descriptor in use (so
// that filling takes a few files, not thousands) and opens /dev/null until
// open fails with EMFILE. The returned function (also run at cleanup)
// closes the fillers and restores the limit; it may be called more than
// once. While exhausted, the test must not open anything itself.
func exhaustFDs(t *testing.T) (release func()) {
	t.Helper()
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	highest := 0
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil && n > highest {
			highest = n
		}
	}
	lim := old
	lim.Cur = uint64(highest + 32)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	var fillers []int
	var once sync.Once
	release = func() {
		once.Do(func() {
			for _, fd := range fillers {
				unix.Close(fd)
			}
			if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
				t.Errorf("restoring RLIMIT_NOFILE: %v", err)
			}
		})
	}
	t.Cleanup(release)
	for i := 0; i < 1<<16; i++ {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.EMFILE) {
			return release
		}
		if err != nil {
			release()
			t.Fatalf("filling descriptors: %v", err)
		}
		fillers = append(fillers, fd)
	}
	release()
	t.Fatal("open never failed with EMFILE")
	return nil
}

// rawSocket opens a TCP socket with a raw system call, so that a test can
// make it before exhausting descriptors and connect it during
// (connectFD); toConn, once descriptors are free, makes it a net.Conn.
func rawSocket(t *testing.T) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

// connectFD connects the raw socket fd to addr (blocking).
func connectFD(fd int, addr string) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return err
	}
	return unix.Connect(fd, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()})
}

// toConn makes the connected raw socket fd a net.Conn and closes fd (the
// conn holds a duplicate: it needs a free descriptor).
func toConn(t *testing.T, fd int) net.Conn {
	t.Helper()
	f := os.NewFile(uintptr(fd), "client")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestFaultDescriptors runs the engine out of descriptors in the middle of
// its work. A session whose upstream finished its handshake while none was
// free fails with a logged reason and 502; a session held from before goes
// on echoing all along; a client that connects meanwhile waits in the
// backlog (accept4() failed (24: Too many open files), logged at crit) and
// is served once descriptors are free again, within the 500 ms pause;
// afterwards descriptors and goroutines are back to where they were.
func TestFaultDescriptors(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	good := startUpstreams(t, set, 1, backend.Echo, nil)
	slow, err := faultnet.Start(faultnet.Config{Fault: faultnet.Echo, TLS: set.ServerConfig(), Delay: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	tb := startEngine(t, dir, faultConf([]string{slow.Addr()}, good, ""))
	other := tb.eng.Addrs()[1].String()
	held := holdSession(t, other)
	// Warm up: a session through the slow upstream, so the goroutines and
	// descriptors of a served session are in the baseline.
	if _, err := echoOnce(tb.addr, []byte("warm"), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the warm-up session to end", 10*time.Second, func() bool { return tb.eng.Metrics().Active() == 1 })
	g0, f0 := runtime.NumGoroutine(), countFDs(t)

	victim, err := net.Dial("tcp", tb.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Close()
	testutil.WaitFor(t, "the victim's upstream connect", 10*time.Second, func() bool { return slow.Accepted() == 2 })
	late := rawSocket(t)

	release := exhaustFDs(t)
	exhausted := time.Now()
	// The late client completes its TCP handshake into the listen
	// backlog; accepting it fails.
	if err := connectFD(late, tb.addr); err != nil {
		release()
		t.Fatalf("connecting the late client: %v", err)
	}
	unix.Write(late, []byte("late"))
	heldErr := held.echo(16 << 10)
	// The victim's upstream finishes its handshake after the delay; its
	// socket cannot be handed to the loop (gnet duplicates it).
	victim.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, verr := victim.Read(make([]byte, 1))
	victimEnd := time.Since(exhausted)
	testutil.WaitFor(t, "accept4() failed in the log", 5*time.Second, func() bool {
		return strings.Contains(tb.logText(), "accept4() failed (24: Too many open files)")
	})
	release()
	released := time.Now()

	if heldErr != nil {
		t.Errorf("the held session while descriptors were exhausted: %v", heldErr)
	}
	if n != 0 || verr == nil || errors.Is(verr, os.ErrDeadlineExceeded) {
		t.Errorf("the victim read %d bytes, %v; want its session closed", n, verr)
	}
	lc := toConn(t, late)
	lc.SetDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, 4)
	if _, err := io.ReadFull(lc, got); err != nil || string(got) != "late" {
		t.Fatalf("the late client: %q, %v", got, err)
	}
	served := time.Since(released)
	t.Logf("victim's session ended %v after the exhaustion; the late client was served %v after the release", victimEnd.Round(time.Millisecond), served.Round(time.Millisecond))
	if served > 500*time.Millisecond+2*time.Second {
		t.Errorf("the late client was served %v after descriptors were free", served)
	}
	log := tb.logText()
	if !strings.Contains(log, "too many open files") && !strings.Contains(log, "Too many open files") {
		t.Errorf("no logged reason for the victim's failure")
	}
	lines := tb.waitAccess(t, 2)
	if !strings.HasPrefix(lines[1], "502 ") {
		t.Errorf("the victim's access-log line %q, want 502", lines[1])
	}
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(strings.ToLower(l), "too many open files") {
			t.Logf("logged: %s", l[strings.Index(l, "["):])
		}
	}
	lc.Close()
	if err := held.echo(1024); err != nil {
		t.Errorf("the held session after: %v", err)
	}
	if _, err := echoOnce(tb.addr, []byte("after"), 10*time.Second); err != nil {
		t.Errorf("a new session after: %v", err)
	}
	testutil.WaitFor(t, "sessions to end", 10*time.Second, func() bool { return tb.eng.Metrics().Active() == 1 })
	var g1, f1 int
	testutil.WaitFor(t, "goroutines and descriptors back to the baseline", 15*time.Second, func() bool {
		g1, f1 = runtime.NumGoroutine(), countFDs(t)
		return g1 <= g0+3 && f1 <= f0+2
	})
	t.Logf("goroutines %d -> %d, descriptors %d -> %d", g0, g1, f0, f1)
}

// TestFaultDialerNoSocket: when socket() fails with EMFILE the dialer
// reports NGINX's "socket() failed (24: Too many open files)", charges no
// peer and tries no other one (the next would fail the same way); once
// descriptors are free the same peers serve.
func TestFaultDialerNoSocket(t *testing.T) {
	var accepted [2]int
	var mu sync.Mutex
	gc := pool.GroupConfig{Name: "g"}
	for i := 0; i < 2; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if errors.Is(err, net.ErrClosed) {
					return
				}
				if err != nil {
					// accept4() takes a descriptor before it waits, so
					// it fails with EMFILE while the test exhausts them.
					time.Sleep(time.Millisecond)
					continue
				}
				mu.Lock()
				accepted[i]++
				mu.Unlock()
				c.Close()
			}
		}()
		sc := pool.NewServerConfig(ln.Addr().String())
		sc.MaxFails = 1
		gc.Servers = append(gc.Servers, sc)
	}
	g, err := pool.NewGroup(gc, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := dial.NewDialer(dial.Config{MinWorkers: 1, MaxWorkers: 1})
	defer d.Close()
	run := func() (dial.Result, []dial.Attempt) {
		done := make(chan dial.Result, 1)
		j := &dial.Job{Sel: g.NewSelection("", 0, time.Now()), ConnectTimeout: 5 * time.Second,
			NextUpstream: true, Done: func(r dial.Result) { done <- r }}
		if err := d.Submit(j); err != nil {
			t.Fatal(err)
		}
		r := <-done
		return r, j.Attempts
	}
	release := exhaustFDs(t)
	r, attempts := run()
	release()
	if r.Err == nil {
		r.Raw.Close()
		t.Fatal("the dial worked with no descriptor free")
	}
	if !errors.Is(r.Err, dial.ErrNoSocket) || !errors.Is(r.Err, syscall.EMFILE) {
		t.Errorf("error %v does not match ErrNoSocket and EMFILE", r.Err)
	}
	if r.Err.Error() != "socket() failed (24: Too many open files)" {
		t.Errorf("error text %q", r.Err)
	}
	if len(attempts) != 1 || !attempts[0].Local {
		t.Errorf("attempts %+v, want one, local", attempts)
	}
	for _, p := range g.Peers() {
		if p.Fails() != 0 || p.Conns() != 0 {
			t.Errorf("peer %s: %d fails, %d conns after a local failure", p, p.Fails(), p.Conns())
		}
	}
	for i := 0; i < 2; i++ {
		r, _ := run()
		if r.Err != nil {
			t.Fatalf("after the release: %v", r.Err)
		}
		r.Raw.Close()
	}
	// The peers' accept goroutines count after the dials returned.
	testutil.WaitFor(t, "both peers to count their accept", 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return accepted[0]+accepted[1] >= 2
	})
	mu.Lock()
	defer mu.Unlock()
	if accepted[0] != 1 || accepted[1] != 1 {
		t.Errorf("after the release the peers accepted %v, want one each (neither was charged)", accepted)
	}
}
