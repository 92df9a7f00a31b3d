package dial

import (
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
	"github.com/tlsrelay/tlsrelay/pool"
	"github.com/tlsrelay/tlsrelay/tlsbridge"
)

// TestFailureClasses: every tlsbridge.Reason of a failure has its own slot
// and name; a reason added to tlsbridge after ReasonClosedAfterHandshake would land in
// "other", so this test fails until FailureClasses covers it.
func TestFailureClasses(t *testing.T) {
	seen := map[string]bool{}
	for r := tlsbridge.ReasonUnknownCA; r <= tlsbridge.ReasonClosedAfterHandshake; r++ {
		i := FailureClass(r)
		if i == 0 || FailureClassName(i) != r.String() || seen[r.String()] {
			t.Fatalf("%v: slot %d name %q", r, i, FailureClassName(i))
		}
		seen[r.String()] = true
	}
	if FailureClass(tlsbridge.ReasonNone) != 0 || FailureClass(tlsbridge.Reason(99)) != 0 || FailureClassName(0) != "other" {
		t.Fatal("none and unknown reasons are not 'other'")
	}
	if next := tlsbridge.ReasonClosedAfterHandshake + 1; !strings.HasPrefix(next.String(), "Reason(") {
		t.Fatalf("tlsbridge has a new reason %q: raise FailureClasses", next)
	}
}

// tlsServer is a TLS 1.2 server on 127.0.0.1:0 (tickets arrive in the
// handshake) that writes one byte and drains.
func tlsServer(t *testing.T, set *pki.Set) string {
	t.Helper()
	cfg := &tls.Config{Certificates: []tls.Certificate{set.Server.TLSCertificate()}, MaxVersion: tls.VersionTLS12}
	return testutil.TLSServer(t, cfg, func(c *tls.Conn) { testutil.Discard(c) })
}

// TestDialerRecordsPeerMetrics: the dialer counts connects, full and
// resumed handshakes with their times, and failures by class, on the peer.
func TestDialerRecordsPeerMetrics(t *testing.T) {
	set, err := pki.NewSet(pki.ECDSAP256, 0)
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewSet(pki.ECDSAP256, 0)
	if err != nil {
		t.Fatal(err)
	}
	g := testGroup(t, tlsServer(t, set))
	p := g.Peers()[0]
	d := NewDialer(Config{MinWorkers: 1})
	defer d.Close()
	cache := tls.NewLRUClientSessionCache(4)
	good := func(*pool.Peer, net.Addr) (*tls.Config, error) {
		return &tls.Config{ServerName: "localhost", RootCAs: pki.Pool(set.Root), ClientSessionCache: cache}, nil
	}
	wrongCA := func(*pool.Peer, net.Addr) (*tls.Config, error) {
		return &tls.Config{ServerName: "localhost", RootCAs: pki.Pool(other.Root)}, nil
	}
	run := func(tlsFor func(*pool.Peer, net.Addr) (*tls.Config, error)) Result {
		j := &Job{Sel: g.NewSelection("", 0, time.Now()), TLS: tlsFor, ConnectTimeout: 5 * time.Second}
		r := dialJob(t, d, j)
		if r.Err == nil {
			r.TLS.Close()
			j.Sel.Release(r.Peer)
		}
		return r
	}
	for i, want := range []bool{false, true, true} {
		r := run(good)
		if r.Err != nil || r.State.DidResume != want {
			t.Fatalf("dial %d: resumed %v err %v", i, r.State.DidResume, r.Err)
		}
	}
	if r := run(wrongCA); r.Err == nil {
		t.Fatal("dial with the wrong CA worked")
	}
	full, resumed, failed := p.Handshakes()
	if full != 1 || resumed != 2 || failed != 1 {
		t.Fatalf("handshakes full %d resumed %d failed %d", full, resumed, failed)
	}
	if byClass := p.HandshakeFailures(); byClass[FailureClass(tlsbridge.ReasonUnknownCA)] != 1 {
		t.Fatalf("failures by class %v", byClass)
	}
	if ct, ht := p.ConnectTime(), p.HandshakeTime(); ct.Count != 4 || ht.Count != 3 || ct.Sum <= 0 || ht.Sum <= 0 {
		t.Fatalf("connect %+v handshake %+v", ct, ht)
	}
	st := d.Stats()
	// The default dialer has no queue and no bound (issue 18).
	if st.Queued != 4 || st.Rejected != 0 || st.Workers < 1 || st.QueueCapacity != 0 || st.MaxWorkers != 0 {
		t.Fatalf("dialer stats %+v", st)
	}
}

// TestStats: busy workers, queue depth and refused jobs.
func TestStats(t *testing.T) {
	g := testGroup(t, listenTCP(t).Addr().String())
	d := NewDialer(Config{MinWorkers: 2, MaxWorkers: 2, Queue: 3})
	defer d.Close()
	release := make(chan struct{})
	var once sync.Once
	defer once.Do(func() { close(release) })
	started := make(chan struct{}, 8)
	blocked := func(*pool.Peer, net.Addr) (*tls.Config, error) {
		started <- struct{}{}
		<-release
		return nil, errors.New("released")
	}
	var wg sync.WaitGroup
	submit := func() error {
		wg.Add(1)
		err := d.Submit(&Job{Sel: g.NewSelection("", 0, time.Now()), TLS: blocked, ConnectTimeout: 5 * time.Second,
			Done: func(Result) { wg.Done() }})
		if err != nil {
			wg.Done()
		}
		return err
	}
	for i := 0; i < 2; i++ {
		if err := submit(); err != nil {
			t.Fatal(err)
		}
	}
	<-started
	<-started
	for i := 0; i < 3; i++ {
		if err := submit(); err != nil {
			t.Fatalf("queued job %d: %v", i, err)
		}
	}
	if err := submit(); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("Submit on a full queue: %v", err)
	}
	st := d.Stats()
	want := Stats{QueueDepth: 3, QueueCapacity: 3, Workers: 2, Busy: 2, MaxWorkers: 2, Queued: 5, Rejected: 1}
	if st != want {
		t.Fatalf("stats %+v, want %+v", st, want)
	}
	once.Do(func() { close(release) })
	wg.Wait()
	if st := d.Stats(); st.QueueDepth != 0 || st.Queued != 5 {
		t.Fatalf("after: %+v", st)
	}
}

// TestGroupSlots: every group of a slot has its own slot and its OpenSSL
// name; an unknown group and none count as "other".
func TestGroupSlots(t *testing.T) {
	seen := map[string]bool{}
	for _, g := range keyGroups {
		i := GroupSlot(g)
		if i == 0 || GroupSlotName(i) != tlsbridge.GroupName(g) || seen[GroupSlotName(i)] {
			t.Fatalf("%v: slot %d name %q", g, i, GroupSlotName(i))
		}
		seen[GroupSlotName(i)] = true
	}
	if GroupSlot(0) != 0 || GroupSlot(tls.CurveID(9999)) != 0 || GroupSlotName(0) != "other" || GroupSlotName(pool.KeyGroups) != "other" {
		t.Fatal("none and unknown groups are not 'other'")
	}
}
