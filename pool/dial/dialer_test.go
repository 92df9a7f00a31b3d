package dial

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
	"github.com/tlsrelay/tlsrelay/pool"
)

// listenTCP is a loopback listener that takes every connection and drains it.
func listenTCP(t *testing.T) net.Listener {
	t.Helper()
	ln := testutil.Listen(t, "tcp", "127.0.0.1:0")
	testutil.Serve(t, ln, testutil.Discard)
	return ln
}

func testGroup(t *testing.T, addrs ...string) *pool.Group {
	t.Helper()
	gc := pool.GroupConfig{Name: "g"}
	for _, a := range addrs {
		gc.Servers = append(gc.Servers, pool.NewServerConfig(a))
	}
	g, err := pool.NewGroup(gc, nil)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// dialJob runs one job and waits for its result.
func dialJob(t *testing.T, d *Dialer, j *Job) Result {
	t.Helper()
	done := make(chan Result, 1)
	j.Done = func(r Result) { done <- r }
	if err := d.Submit(j); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("dial job not done after 10s")
	}
	return Result{}
}

// TestDialerNextUpstream: a refused peer is logged, counted and skipped.
func TestDialerNextUpstream(t *testing.T) {
	live := listenTCP(t).Addr().String()
	g := testGroup(t, backend.RefusingAddr(t), live)
	d := NewDialer(Config{})
	defer d.Close()
	var failures []Attempt
	j := &Job{Sel: g.NewSelection("", 0, time.Now()), NextUpstream: true, ConnectTimeout: 5 * time.Second,
		OnFailure: func(a Attempt, _ bool) { failures = append(failures, a) }}
	r := dialJob(t, d, j)
	if r.Err != nil || r.Raw == nil {
		t.Fatalf("dial: %+v", r)
	}
	r.Raw.Close()
	if r.Peer.Name != live || len(j.Attempts) != 2 || len(failures) != 1 || failures[0].Handshaking {
		t.Fatalf("peer %s, attempts %+v, failures %+v", r.Peer.Name, j.Attempts, failures)
	}
	j.Sel.Release(r.Peer)

	// With proxy_next_upstream off, the first failure ends the walk.
	g2 := testGroup(t, backend.RefusingAddr(t), live)
	j2 := &Job{Sel: g2.NewSelection("", 0, time.Now()), ConnectTimeout: 5 * time.Second}
	if r := dialJob(t, d, j2); r.Err == nil {
		t.Fatal("dial succeeded with proxy_next_upstream off")
	}
}

// TestDialerHandshakeTimeout: a peer that accepts but never answers the
// ClientHello fails after the timeout with a named error.
func TestDialerHandshakeTimeout(t *testing.T) {
	g := testGroup(t, listenTCP(t).Addr().String())
	d := NewDialer(Config{})
	defer d.Close()
	j := &Job{Sel: g.NewSelection("", 0, time.Now()), ConnectTimeout: 100 * time.Millisecond,
		TLS: func(*pool.Peer, net.Addr) (*tls.Config, error) { return &tls.Config{InsecureSkipVerify: true}, nil }}
	r := dialJob(t, d, j)
	if !errors.Is(r.Err, ErrHandshakeTimeout) || !j.Attempts[0].Handshaking {
		t.Fatalf("err %v, attempts %+v", r.Err, j.Attempts)
	}
}

// TestDialerElastic: workers grow while all are busy, up to the maximum,
// and shrink back after the idle timeout; a full queue refuses jobs.
func TestDialerElastic(t *testing.T) {
	g := testGroup(t, listenTCP(t).Addr().String())
	d := NewDialer(Config{MinWorkers: 2, MaxWorkers: 5, IdleTimeout: 50 * time.Millisecond, Queue: 8})
	defer d.Close()
	release := make(chan struct{})
	var once sync.Once
	defer once.Do(func() { close(release) }) // never leave workers blocked
	var wg sync.WaitGroup
	blocked := func(*pool.Peer, net.Addr) (*tls.Config, error) {
		<-release
		return nil, errors.New("released")
	}
	for i := 0; i < 8; i++ {
		wg.Add(1)
		j := &Job{Sel: g.NewSelection("", 0, time.Now()), TLS: blocked, ConnectTimeout: 5 * time.Second,
			Done: func(Result) { wg.Done() }}
		if err := d.Submit(j); err != nil {
			t.Fatalf("job %d: %v", i, err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for d.Workers() != 5 {
		if time.Now().After(deadline) {
			t.Fatalf("%d workers, want 5", d.Workers())
		}
		time.Sleep(time.Millisecond)
	}
	// 5 running, 3 queued: the queue (8) takes 5 more, then refuses.
	var refused error
	for i := 0; i < 6 && refused == nil; i++ {
		wg.Add(1)
		refused = d.Submit(&Job{Sel: g.NewSelection("", 0, time.Now()), TLS: blocked, Done: func(Result) { wg.Done() }})
		if refused != nil {
			wg.Done()
		}
	}
	if !errors.Is(refused, ErrQueueFull) {
		t.Fatalf("Submit on a full queue: %v", refused)
	}
	once.Do(func() { close(release) })
	wg.Wait()
	deadline = time.Now().Add(5 * time.Second)
	for d.Workers() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d workers after idling, want 2", d.Workers())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// insecureTLS is a client configuration for peers whose certificate does
// not matter (they never send one).
func insecureTLS(*pool.Peer, net.Addr) (*tls.Config, error) {
	return &tls.Config{InsecureSkipVerify: true}, nil
}

// TestDialerIsolation: with the default configuration, 1,100 jobs hung in
// their handshake (more than the 1,024 workers the dialer once shared) do
// not delay a job to another peer: it completes while they all still hang.
func TestDialerIsolation(t *testing.T) {
	const n = 1100
	silent := testutil.SilentUpstream(t)
	g := testGroup(t, silent.Addr())
	d := NewDialer(Config{})
	defer d.Close()
	var done sync.WaitGroup
	for i := 0; i < n; i++ {
		done.Add(1)
		j := &Job{Sel: g.NewSelection("", 0, time.Now()), TLS: insecureTLS, ConnectTimeout: time.Minute,
			Done: func(Result) { done.Done() }}
		if err := d.Submit(j); err != nil {
			t.Fatal(err)
		}
	}
	// The silent peer accepts on a goroutine of its own: a connection
	// the dialer sees established may still wait in its backlog.
	testutil.WaitFor(t, "every handshake in flight and accepted", 30*time.Second, func() bool {
		return d.InFlight().Handshaking == n && silent.Open() == n
	})
	healthy := testGroup(t, listenTCP(t).Addr().String())
	start := time.Now()
	r := dialJob(t, d, &Job{Sel: healthy.NewSelection("", 0, time.Now()), ConnectTimeout: time.Minute})
	if r.Err != nil {
		t.Fatalf("dial to a healthy peer while %d hang: %v", n, r.Err)
	}
	r.Raw.Close()
	if f := d.InFlight(); f.Handshaking != n || silent.Open() != n {
		t.Fatalf("%d handshakes in flight, %d open at the silent peer; want %d", f.Handshaking, silent.Open(), n)
	}
	t.Logf("dial to a healthy peer while %d handshakes hang: %v; %d goroutines in the dialer", n, time.Since(start), d.Workers())
	// Close ends every hung handshake at once.
	start = time.Now()
	d.Close()
	done.Wait()
	t.Logf("Close with %d handshakes in flight: %v", n, time.Since(start))
	testutil.WaitFor(t, "the silent peer to see every connection closed", 10*time.Second, func() bool { return silent.Open() == 0 })
	if f := d.InFlight(); f.Handshaking != 0 || f.Connecting != 0 || f.Cancelled != n {
		t.Fatalf("after Close: %+v, want nothing in flight and %d cancelled", f, n)
	}
}

// TestDialerCancel: Cancel ends a job hung in its handshake at once, with
// context.Canceled; the peer sees its connection closed and is neither
// charged a failure nor left holding the session's connection count. A job
// cancelled before it runs (behind a bounded dialer's busy worker) never
// dials.
func TestDialerCancel(t *testing.T) {
	silent := testutil.SilentUpstream(t)
	g := testGroup(t, silent.Addr())
	p := g.Peers()[0]
	d := NewDialer(Config{MinWorkers: 1, MaxWorkers: 1})
	defer d.Close()
	results := make(chan Result, 2)
	hung := &Job{Sel: g.NewSelection("", 0, time.Now()), TLS: insecureTLS, ConnectTimeout: time.Minute,
		NextUpstream: true, Done: func(r Result) { results <- r }}
	queued := &Job{Sel: g.NewSelection("", 0, time.Now()), TLS: insecureTLS, ConnectTimeout: time.Minute,
		Done: func(r Result) { results <- r }}
	for _, j := range []*Job{hung, queued} {
		if err := d.Submit(j); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, "the handshake in flight", 10*time.Second, func() bool { return d.InFlight().Handshaking == 1 })
	queued.Cancel()
	start := time.Now()
	hung.Cancel()
	hung.Cancel() // a second call does nothing
	for i := 0; i < 2; i++ {
		select {
		case r := <-results:
			if !errors.Is(r.Err, context.Canceled) || r.Raw != nil {
				t.Fatalf("cancelled job's result: %+v", r)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a cancelled job was not done after 10s (its ConnectTimeout is a minute)")
		}
	}
	t.Logf("cancelled handshake done after %v", time.Since(start))
	testutil.WaitFor(t, "the peer to see the connection closed", 10*time.Second, func() bool { return silent.Open() == 0 })
	if got := silent.Accepted(); got != 1 {
		t.Errorf("the peer accepted %d connections; the job cancelled while queued must not dial", got)
	}
	if len(hung.Attempts) != 0 || len(queued.Attempts) != 0 {
		t.Errorf("attempts recorded for cancelled jobs: %+v %+v", hung.Attempts, queued.Attempts)
	}
	if p.Fails() != 0 || p.Conns() != 0 {
		t.Errorf("peer after a cancel: %d fails, %d conns; want 0, 0", p.Fails(), p.Conns())
	}
	if _, _, failed := p.Handshakes(); failed != 0 {
		t.Errorf("a cancelled handshake counted as %d failed", failed)
	}
	if f := d.InFlight(); f.Handshaking != 0 || f.Cancelled != 2 {
		t.Errorf("in flight after the cancels: %+v", f)
	}
	// A job never submitted, and one done, ignore Cancel.
	(&Job{}).Cancel()
	hung.Cancel()
}

// TestDialerCancelConnect: Cancel ends a TCP connect that hangs (the
// peer's accept queue is full, so its SYNs go unanswered) at once.
func TestDialerCancelConnect(t *testing.T) {
	addr := fullBacklog(t)
	g := testGroup(t, addr)
	d := NewDialer(Config{})
	defer d.Close()
	results := make(chan Result, 1)
	j := &Job{Sel: g.NewSelection("", 0, time.Now()), ConnectTimeout: time.Minute,
		Done: func(r Result) { results <- r }}
	if err := d.Submit(j); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the connect in flight", 10*time.Second, func() bool { return d.InFlight().Connecting == 1 })
	select {
	case r := <-results:
		t.Skipf("the connect did not hang: %+v", r)
	case <-time.After(50 * time.Millisecond):
	}
	j.Cancel()
	select {
	case r := <-results:
		if !errors.Is(r.Err, context.Canceled) {
			t.Fatalf("cancelled connect: %+v", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a cancelled connect was not done after 10s")
	}
	if p := g.Peers()[0]; p.Fails() != 0 || p.Conns() != 0 {
		t.Errorf("peer after a cancelled connect: %d fails, %d conns", p.Fails(), p.Conns())
	}
}

// fullBacklog returns the address of a socket that listens with a backlog
// of 0 and never accepts, after filling its accept queue: a further
// connect gets no SYN-ACK and hangs.
func fullBacklog(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	// Fill the queue: connects succeed until it is full, then hang.
	for i := 0; i < 8; i++ {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return addr
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Skip("the accept queue never filled")
	return ""
}

// TestDialerPrepare: Prepare runs on the worker before the walk and may
// start it; its error ends the job with that error; a job cancelled while
// it waits ends with context.Canceled.
func TestDialerPrepare(t *testing.T) {
	live := listenTCP(t).Addr().String()
	g := testGroup(t, live)
	d := NewDialer(Config{})
	defer d.Close()

	sel := new(pool.Selection)
	j := &Job{Sel: sel, ConnectTimeout: 5 * time.Second, Prepare: func(context.Context) error {
		g.InitSelection(sel, "", 0, time.Now())
		return nil
	}}
	r := dialJob(t, d, j)
	if r.Err != nil || r.Peer == nil || r.Peer.Name != live {
		t.Fatalf("dial after Prepare: %+v", r)
	}
	r.Raw.Close()
	sel.Release(r.Peer)

	lookup := errors.New("x could not be resolved (3: Host not found)")
	j = &Job{Sel: new(pool.Selection), Prepare: func(context.Context) error { return lookup }}
	if r := dialJob(t, d, j); !errors.Is(r.Err, lookup) || len(j.Attempts) != 0 {
		t.Fatalf("Prepare failing: %+v, attempts %v", r, j.Attempts)
	}

	waiting := make(chan struct{})
	done := make(chan Result, 1)
	j = &Job{Sel: new(pool.Selection), Prepare: func(ctx context.Context) error {
		close(waiting)
		<-ctx.Done()
		return errors.New("lookup cut short")
	}, Done: func(r Result) { done <- r }}
	if err := d.Submit(j); err != nil {
		t.Fatal(err)
	}
	<-waiting
	j.Cancel()
	select {
	case r := <-done:
		if !errors.Is(r.Err, context.Canceled) {
			t.Fatalf("cancelled in Prepare: %v, want context.Canceled", r.Err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a job cancelled in Prepare did not end")
	}
}
