package dial

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/pool"
)

// TestUnixPeers: a "unix:/path" server is one peer with no IP and no
// host, named "unix:/path" ($upstream_addr); a group mixes it with TCP
// servers; a reload that keeps it keeps its state (SameAs, Inherit); the
// dialer connects to it with the TCP options left out, and refused
// sockets fall through to the next peer.
func TestUnixPeers(t *testing.T) {
	dir, err := os.MkdirTemp("", "trp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	live := filepath.Join(dir, "live.sock")
	ln, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dead := filepath.Join(dir, "dead.sock")
	tcp := listenTCP(t).Addr().String()

	build := func() *pool.Group {
		return testGroup(t, "unix:"+dead, "unix:"+live, tcp)
	}
	g := build()
	peers := g.Peers()
	if len(peers) != 3 || !g.HasUnix() {
		t.Fatalf("peers %v, HasUnix %v", peers, g.HasUnix())
	}
	if p := peers[1]; p.Path != live || p.Host != "" || p.Addr.IsValid() || p.Name != "unix:"+live || p.String() != "unix:"+live {
		t.Fatalf("unix peer %+v (String %q)", p, p.String())
	}
	if testGroup(t, tcp).HasUnix() {
		t.Fatal("a TCP-only group reports a unix peer")
	}
	g2 := build()
	if !g2.SameAs(g) {
		t.Fatal("an unchanged group with unix peers is not the same")
	}

	d := NewDialer(Config{})
	defer d.Close()
	j := &Job{Sel: g.NewSelection("", 0, time.Now()), NextUpstream: true, ConnectTimeout: 5 * time.Second,
		Socket: SocketOptions{KeepAlive: true, NoDelay: false, Rcvbuf: 64 << 10}}
	r := dialJob(t, d, j)
	if r.Err != nil {
		t.Fatalf("dial: %v (attempts %+v)", r.Err, j.Attempts)
	}
	defer r.Raw.Close()
	if _, ok := r.Raw.(*net.UnixConn); !ok || r.Peer != peers[1] {
		t.Fatalf("connected %T to %v", r.Raw, r.Peer)
	}
	if len(j.Attempts) != 2 || j.Attempts[0].Peer != peers[0] || j.Attempts[0].Err == nil {
		t.Fatalf("attempts %+v: want the dead socket first, failed", j.Attempts)
	}
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("the unix upstream accepted nothing")
	}
	j.Sel.Release(r.Peer)

	g3 := build()
	g3.Inherit(g)
	if got := g3.Peers()[0].Failures(); got != 1 {
		t.Errorf("the dead unix peer's failures after Inherit: %d, want 1", got)
	}
}
