package tlsbridge

import (
	"crypto/rand"
	"crypto/tls"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/pki"
)

// TestResumptionThreeServers dials three servers with independent ticket
// keys through one store: after the first handshake to each, every further
// one resumes (one shared slot would make them evict each other).
func TestResumptionThreeServers(t *testing.T) {
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(versionName(v), func(t *testing.T) {
			set := mustSet(t, pki.ECDSAP256, 1)
			f := pkiFiles(t, set)
			var servers []*testServer
			for i := 0; i < 3; i++ {
				servers = append(servers, startServer(t, serverWith(set, func(c *tls.Config) { c.MaxVersion = v })))
			}
			store := NewSessionStore(SessionStoreOptions{})
			p := mustPolicy(t, PolicyConfig{Verify: true, VerifyDepth: 1, TrustedCertificate: f.CA, SessionReuse: true, ServerName: true}, store)
			const rounds = 4
			for r := 0; r < rounds; r++ {
				for _, s := range servers {
					// All three share one host name, as servers of one
					// upstream{} behind one certificate often do.
					cs, err := dialOnce(t, p, Target{Addr: s.addr, Host: "localhost"}, Vars{}, nil)
					if err != nil {
						t.Fatal(err)
					}
					if sc := s.next(t); sc.state.DidResume != cs.DidResume {
						t.Fatalf("client and server disagree on resumption")
					}
					if want := r > 0; cs.DidResume != want {
						t.Fatalf("round %d to %s: resumed=%v", r, s.addr, cs.DidResume)
					}
				}
			}
			for _, s := range servers {
				st := store.Stats(s.addr)
				if st.Full != 1 || st.Resumed != rounds-1 || st.Refused != 0 || st.Failed != 0 {
					t.Fatalf("%s: %+v", s.addr, st)
				}
				t.Logf("%s %s: full %d, resumed %d, tickets held %d", versionName(v), s.addr, st.Full, st.Resumed, st.Tickets)
			}
		})
	}
}

func TestResumptionOff(t *testing.T) {
	set := mustSet(t, pki.ECDSAP256, 0)
	srv := startServer(t, serverWith(set, nil))
	store := NewSessionStore(SessionStoreOptions{})
	p := mustPolicy(t, PolicyConfig{SessionReuse: false}, store)
	for i := 0; i < 3; i++ {
		cs, err := dialOnce(t, p, Target{Addr: srv.addr}, Vars{}, nil)
		if err != nil || cs.DidResume {
			t.Fatalf("dial %d: resumed=%v err=%v", i, cs.DidResume, err)
		}
		srv.next(t)
	}
	if st := store.Stats(srv.addr); st.Full != 3 || st.Resumed != 0 || st.Tickets != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestRefusedResumption rotates the server's ticket key: the offered
// ticket is refused, counted and dropped, and the next handshake resumes
// with the ticket the full handshake brought.
func TestRefusedResumption(t *testing.T) {
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(versionName(v), func(t *testing.T) {
			set := mustSet(t, pki.ECDSAP256, 0)
			cfg := serverWith(set, func(c *tls.Config) { c.MaxVersion = v })
			rotate := func() {
				var k [32]byte
				rand.Read(k[:])
				cfg.SetSessionTicketKeys([][32]byte{k})
			}
			rotate()
			srv := startServer(t, cfg)
			store := NewSessionStore(SessionStoreOptions{TicketsPerKey: 1})
			p := mustPolicy(t, PolicyConfig{SessionReuse: true}, store)
			target := Target{Addr: srv.addr}
			want := []bool{false, true, false, true}
			for i, w := range want {
				if i == 2 {
					rotate()
				}
				cs, err := dialOnce(t, p, target, Vars{}, nil)
				if err != nil {
					t.Fatal(err)
				}
				srv.next(t)
				if cs.DidResume != w {
					t.Fatalf("dial %d: resumed=%v, want %v", i, cs.DidResume, w)
				}
			}
			if st := store.Stats(srv.addr); st.Full != 2 || st.Resumed != 2 || st.Refused != 1 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

// TestFailedResumptionRetry: a server that breaks when offered a ticket
// (the "digest check failed" kind). The failure drops the ticket and
// Observe asks for one retry with a full handshake, which works.
func TestFailedResumptionRetry(t *testing.T) {
	set := mustSet(t, pki.ECDSAP256, 0)
	base := serverWith(set, nil)
	srv := startServer(t, &tls.Config{GetConfigForClient: func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
		if slices.Contains(hi.Extensions, 41) { // pre_shared_key: a ticket is offered
			return nil, errBrokenResumption
		}
		return base, nil
	}})
	store := NewSessionStore(SessionStoreOptions{})
	p := mustPolicy(t, PolicyConfig{SessionReuse: true}, store)
	target := Target{Addr: srv.addr}
	if _, err := dialOnce(t, p, target, Vars{}, nil); err != nil {
		t.Fatal(err)
	}
	srv.next(t)
	if store.Stats(srv.addr).Tickets != 1 {
		t.Fatal("no ticket stored")
	}
	// dialOnce reports to Observe; repeat its steps to see the verdict.
	cfg, _ := p.ClientConfig(target, Vars{})
	_, err := handshake(t, target.Addr, cfg)
	srv.next(t)
	if err == nil {
		t.Fatal("resumption against the broken server worked")
	}
	if !p.Observe(target, Vars{}, tls.ConnectionState{}, err) {
		t.Fatalf("Observe does not ask for a retry after %v", err)
	}
	retryCfg, _ := p.ConfigWithoutResumption(target, Vars{})
	if _, err := dialOnce(t, p, target, Vars{}, retryCfg); err != nil {
		t.Fatalf("retry: %v", err)
	}
	srv.next(t)
	st := store.Stats(srv.addr)
	if st.FailedResumptions != 1 || st.Tickets != 0 || st.Full != 2 {
		t.Fatalf("stats %+v", st)
	}
}

type brokenResumption struct{}

func (brokenResumption) Error() string { return "test server: resumption is broken here" }

var errBrokenResumption error = brokenResumption{}

// handshake dials addr with cfg and handshakes, without Observe.
func handshake(t *testing.T, addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	p := &Policy{} // Observe on a policy without a store does nothing
	return dialOnce(t, p, Target{Addr: addr}, Vars{}, cfg)
}

// TestCrossBlock is NGINX's cross-block case: a server{} with depth 1 must
// not resume a session a depth-2 server{} verified, against the same
// upstream with a 2-intermediate chain, through one store.
func TestCrossBlock(t *testing.T) {
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(versionName(v), func(t *testing.T) {
			set := mustSet(t, pki.ECDSAP256, 2)
			f := pkiFiles(t, set)
			srv := startServer(t, serverWith(set, func(c *tls.Config) { c.MaxVersion = v }))
			store := NewSessionStore(SessionStoreOptions{})
			loose := mustPolicy(t, PolicyConfig{Verify: true, VerifyDepth: 2, TrustedCertificate: f.CA, SessionReuse: true}, store)
			strict := mustPolicy(t, PolicyConfig{Verify: true, VerifyDepth: 1, TrustedCertificate: f.CA, SessionReuse: true}, store)
			target := Target{Addr: srv.addr, Host: "localhost"}
			for i := 0; i < 2; i++ {
				if _, err := dialOnce(t, loose, target, Vars{}, nil); err != nil {
					t.Fatalf("loose: %v", err)
				}
				srv.next(t)
			}
			for i := 0; i < 2; i++ {
				cs, err := dialOnce(t, strict, target, Vars{}, nil)
				if Classify(err) != ReasonDepth {
					t.Fatalf("strict after loose: resumed=%v err=%v", cs.DidResume, err)
				}
				if sc := srv.next(t); sc.state.DidResume {
					t.Fatal("the strict block resumed the loose block's session")
				}
			}
			if loose.Fingerprint() == strict.Fingerprint() {
				t.Fatal("fingerprints equal")
			}
		})
	}
}

// TestChecksOnResumedHandshakes: VerifyConnection runs on resumption, so a
// certificate that stops passing our checks fails a resumed handshake too.
func TestChecksOnResumedHandshakes(t *testing.T) {
	set := mustSet(t, pki.ECDSAP256, 0)
	f := pkiFiles(t, set)
	srv := startServer(t, serverWith(set, nil))
	store := NewSessionStore(SessionStoreOptions{})
	p := mustPolicy(t, PolicyConfig{Verify: true, VerifyDepth: 1, TrustedCertificate: f.CA, SessionReuse: true}, store)
	target := Target{Addr: srv.addr, Host: "localhost"}
	if _, err := dialOnce(t, p, target, Vars{}, nil); err != nil {
		t.Fatal(err)
	}
	srv.next(t)
	p.trust.now = func() time.Time { return time.Now().Add(72 * time.Hour) } // past the leaf's NotAfter
	cfg, _ := p.ClientConfig(target, Vars{})
	_, err := handshake(t, srv.addr, cfg)
	if Classify(err) != ReasonExpired {
		t.Fatalf("resumed handshake: %v", err)
	}
	srv.next(t)
}

// collectSessions returns n distinct client sessions from real TLS 1.3
// handshakes.
func collectSessions(t *testing.T, n int) []*tls.ClientSessionState {
	t.Helper()
	set := mustSet(t, pki.ECDSAP256, 0)
	srv := startServer(t, serverWith(set, nil))
	c := &capture{}
	cfg := &tls.Config{InsecureSkipVerify: true, ClientSessionCache: c}
	for len(c.got) < n {
		if _, err := handshake(t, srv.addr, cfg); err != nil {
			t.Fatal(err)
		}
		srv.next(t)
	}
	return c.got[:n]
}

type capture struct {
	mu  sync.Mutex
	got []*tls.ClientSessionState
}

func (c *capture) Get(string) (*tls.ClientSessionState, bool) { return nil, false }
func (c *capture) Put(_ string, cs *tls.ClientSessionState) {
	if cs != nil {
		c.mu.Lock()
		c.got = append(c.got, cs)
		c.mu.Unlock()
	}
}

func TestSessionSlot(t *testing.T) {
	sessions := collectSessions(t, 6)
	now := time.Now()
	clock := func() time.Time { return now }
	store := NewSessionStore(SessionStoreOptions{TicketsPerKey: 4, MaxAge: time.Hour, Now: clock})
	sl := store.slot("k", "e")
	for _, s := range sessions {
		sl.put(s)
	}
	if len(sl.tickets) != 4 || sl.tickets[0].cs != sessions[5] || sl.tickets[3].cs != sessions[2] {
		t.Fatal("slot does not keep the 4 newest, newest first")
	}
	// Unused tickets first, newest first; then the newest again.
	for i, want := range []*tls.ClientSessionState{sessions[5], sessions[4], sessions[3], sessions[2], sessions[5]} {
		if got := sl.get(); got != want {
			t.Fatalf("get %d: wrong ticket", i)
		}
	}
	// A failed resumption (Put nil) drops the oldest ticket handed out.
	(&sessionView{slot: sl}).Put("ignored", nil)
	if len(sl.tickets) != 3 || slices.ContainsFunc(sl.tickets, func(tk *ticket) bool { return tk.cs == sessions[5] }) {
		t.Fatal("Put(nil) did not drop the handed-out ticket")
	}
	// Lifetimes: MaxAge, and a TLS 1.3 ticket's own use-by time.
	now = now.Add(2 * time.Hour)
	if sl.get() != nil {
		t.Fatal("expired ticket handed out")
	}
	life, ok := tls13Lifetime(sessions[0])
	if !ok || life != 7*24*time.Hour {
		t.Fatalf("lifetime of a Go server's ticket: %v %v (want 7 days)", life, ok)
	}
	now = time.Now()
	long := NewSessionStore(SessionStoreOptions{MaxAge: 30 * 24 * time.Hour, Now: clock})
	ls := long.slot("k", "e")
	ls.put(sessions[0])
	// The lifetime read from the first ticket applies to the next ones
	// for lifeRecheck without reading them.
	start := now
	now = now.Add(lifeRecheck / 2)
	ls.put(sessions[1])
	if want := now.Add(7 * 24 * time.Hour); !ls.tickets[0].expires.Equal(want) || !ls.lifeAt.Equal(start) {
		t.Fatalf("second ticket expires %v (want %v), lifetime read at %v (want %v)", ls.tickets[0].expires, want, ls.lifeAt, start)
	}
	now = now.Add(lifeRecheck)
	ls.put(sessions[2])
	if !ls.lifeAt.Equal(now) {
		t.Fatalf("lifetime not read again after lifeRecheck: read at %v", ls.lifeAt)
	}
	now = start.Add(8 * 24 * time.Hour)
	if ls.get() != nil {
		t.Fatal("ticket handed out after its server-given lifetime")
	}
}

// TestOpenSSLServerTwoTickets: an OpenSSL server sends two TLS 1.3 tickets
// per full handshake; the store keeps both and hands out unused ones
// first.
func TestOpenSSLServerTwoTickets(t *testing.T) {
	srv := startOpenSSLServer(t, "-tls1_3")
	store := NewSessionStore(SessionStoreOptions{})
	p := mustPolicy(t, PolicyConfig{SessionReuse: true}, store)
	if _, err := dialOpenSSL(t, p, srv); err != nil {
		t.Fatal(err)
	}
	if n := store.Stats(srv.addr).Tickets; n != 2 {
		t.Fatalf("%d tickets stored after one handshake, want 2", n)
	}
	for i := 0; i < 3; i++ {
		cs, err := dialOpenSSL(t, p, srv)
		if err != nil || !cs.DidResume {
			t.Fatalf("dial %d: resumed=%v err=%v", i, cs.DidResume, err)
		}
	}
	st := store.Stats(srv.addr)
	t.Logf("openssl s_server TLS 1.3: %+v", st)
	if st.Resumed != 3 || st.Tickets != DefaultTicketsPerKey {
		t.Fatalf("stats %+v", st)
	}
}

// TestConcurrentHandshakes runs many handshakes to one endpoint at once
// (for -race) and checks that every one is counted.
func TestConcurrentHandshakes(t *testing.T) {
	set := mustSet(t, pki.ECDSAP256, 0)
	srv := startServer(t, serverWith(set, nil))
	store := NewSessionStore(SessionStoreOptions{})
	p := mustPolicy(t, PolicyConfig{SessionReuse: true}, store)
	target := Target{Addr: srv.addr}
	if _, err := dialOnce(t, p, target, Vars{}, nil); err != nil {
		t.Fatal(err)
	}
	srv.next(t)
	const n = 24
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := dialOnce(t, p, target, Vars{}, nil); err != nil {
				t.Error(err)
			}
		}()
	}
	for i := 0; i < n; i++ {
		srv.next(t)
	}
	wg.Wait()
	st := store.Stats(srv.addr)
	if st.Full+st.Resumed != n+1 || st.Resumed == 0 {
		t.Fatalf("stats %+v", st)
	}
	t.Logf("concurrent: %+v", st)
}
