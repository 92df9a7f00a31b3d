package pool

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/backend"
)

func listenTCP(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	return ln
}

func testGroup(t *testing.T, addrs ...string) *Group {
	t.Helper()
	gc := GroupConfig{Name: "g"}
	for _, a := range addrs {
		gc.Servers = append(gc.Servers, NewServerConfig(a))
	}
	g, err := NewGroup(gc, nil)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// dial runs one job and waits for its result.
func dial(t *testing.T, d *Dialer, j *DialJob) DialResult {
	t.Helper()
	done := make(chan DialResult, 1)
	j.Done = func(r DialResult) { done <- r }
	if err := d.Submit(j); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("dial job not done after 10s")
	}
	return DialResult{}
}

// TestDialerNextUpstream: a refused peer is logged, counted and skipped.
func TestDialerNextUpstream(t *testing.T) {
	live := listenTCP(t).Addr().String()
	g := testGroup(t, backend.RefusingAddr(t), live)
	d := NewDialer(DialerConfig{})
	defer d.Close()
	var failures []Attempt
	j := &DialJob{Sel: g.NewSelection("", 0, time.Now()), NextUpstream: true, ConnectTimeout: 5 * time.Second,
		OnFailure: func(a Attempt, _ bool) { failures = append(failures, a) }}
	r := dial(t, d, j)
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
	j2 := &DialJob{Sel: g2.NewSelection("", 0, time.Now()), ConnectTimeout: 5 * time.Second}
	if r := dial(t, d, j2); r.Err == nil {
		t.Fatal("dial succeeded with proxy_next_upstream off")
	}
}

// TestDialerHandshakeTimeout: a peer that accepts but never answers the
// ClientHello fails after the timeout with a named error.
func TestDialerHandshakeTimeout(t *testing.T) {
	g := testGroup(t, listenTCP(t).Addr().String())
	d := NewDialer(DialerConfig{})
	defer d.Close()
	j := &DialJob{Sel: g.NewSelection("", 0, time.Now()), ConnectTimeout: 100 * time.Millisecond,
		TLS: func(*Peer) (*tls.Config, error) { return &tls.Config{InsecureSkipVerify: true}, nil }}
	r := dial(t, d, j)
	if !errors.Is(r.Err, ErrHandshakeTimeout) || !j.Attempts[0].Handshaking {
		t.Fatalf("err %v, attempts %+v", r.Err, j.Attempts)
	}
}

// TestDialerElastic: workers grow while all are busy, up to the maximum,
// and shrink back after the idle timeout; a full queue refuses jobs.
func TestDialerElastic(t *testing.T) {
	g := testGroup(t, listenTCP(t).Addr().String())
	d := NewDialer(DialerConfig{MinWorkers: 2, MaxWorkers: 5, IdleTimeout: 50 * time.Millisecond, Queue: 8})
	defer d.Close()
	release := make(chan struct{})
	var once sync.Once
	defer once.Do(func() { close(release) }) // never leave workers blocked
	var wg sync.WaitGroup
	blocked := func(*Peer) (*tls.Config, error) {
		<-release
		return nil, errors.New("released")
	}
	for i := 0; i < 8; i++ {
		wg.Add(1)
		j := &DialJob{Sel: g.NewSelection("", 0, time.Now()), TLS: blocked, ConnectTimeout: 5 * time.Second,
			Done: func(DialResult) { wg.Done() }}
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
		refused = d.Submit(&DialJob{Sel: g.NewSelection("", 0, time.Now()), TLS: blocked, Done: func(DialResult) { wg.Done() }})
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
