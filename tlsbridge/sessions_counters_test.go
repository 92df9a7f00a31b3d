package tlsbridge

import (
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/pki"
)

// held counts the tickets of the store's slots under their locks: what
// Counters().Tickets must equal once the store is quiet.
func held(s *SessionStore) (tickets, keys int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sl := range s.slots {
		sl.mu.Lock()
		tickets += int64(len(sl.tickets))
		sl.mu.Unlock()
	}
	return tickets, int64(len(s.slots))
}

// checkCounters compares the running counts with the store's contents and
// with want (Tickets and Keys are checked against the contents).
func checkCounters(t *testing.T, s *SessionStore, step string, want StoreCounters) {
	t.Helper()
	c := s.Counters()
	tickets, keys := held(s)
	if c.Tickets != tickets || c.Keys != keys {
		t.Fatalf("%s: counted %d tickets in %d keys, the store holds %d in %d", step, c.Tickets, c.Keys, tickets, keys)
	}
	if int64(c.Stored)-int64(c.Evicted)-int64(c.Expired)-int64(c.Refused) != c.Tickets {
		t.Fatalf("%s: stored - evicted - expired - refused != tickets: %+v", step, c)
	}
	if c != want {
		t.Fatalf("%s: %+v, want %+v", step, c, want)
	}
}

func TestStoreCounters(t *testing.T) {
	sessions := collectSessions(t, 6)
	now := time.Now()
	clock := func() time.Time { return now }
	store := NewSessionStore(SessionStoreOptions{TicketsPerKey: 4, MaxAge: time.Hour, Now: clock})
	checkCounters(t, store, "empty", StoreCounters{})

	k1 := store.view("k1", "e1")
	for _, s := range sessions {
		k1.Put("", s)
	}
	checkCounters(t, store, "6 puts, 4 per key", StoreCounters{Tickets: 4, Keys: 1, Stored: 6, Evicted: 2})

	// A failed resumption drops the ticket handed out.
	if _, ok := k1.Get(""); !ok {
		t.Fatal("no ticket")
	}
	k1.Put("", nil)
	checkCounters(t, store, "failed resumption", StoreCounters{Tickets: 3, Keys: 1, Stored: 6, Evicted: 2, Refused: 1})
	// A full handshake after the offer (the upstream refused the ticket)
	// drops it too; a resumed one keeps it.
	k1.Get("")
	k1.slot.observe(true, nil)
	k1.Get("")
	k1.slot.observe(false, nil)
	checkCounters(t, store, "resumed, then refused", StoreCounters{Tickets: 2, Keys: 1, Stored: 6, Evicted: 2, Refused: 2})

	store.view("k2", "e2").Put("", sessions[0])
	checkCounters(t, store, "second key", StoreCounters{Tickets: 3, Keys: 2, Stored: 7, Evicted: 2, Refused: 2})

	now = now.Add(2 * time.Hour)
	store.Snapshot() // expires lazily
	checkCounters(t, store, "expired", StoreCounters{Tickets: 0, Keys: 2, Stored: 7, Evicted: 2, Refused: 2, Expired: 3})

	k1.Put("", sessions[1])
	k1.Put("", sessions[2])
	store.Flush()
	checkCounters(t, store, "flush", StoreCounters{Tickets: 0, Keys: 2, Stored: 9, Evicted: 4, Refused: 2, Expired: 3})
}

// TestStoreCountersPrune fills the key limit with keys that all hold a
// ticket: the next key forgets half of them, and their tickets count as
// evicted.
func TestStoreCountersPrune(t *testing.T) {
	if testing.Short() {
		t.Skip("fills 65536 keys")
	}
	cs := collectSessions(t, 1)[0]
	store := NewSessionStore(SessionStoreOptions{})
	for i := 0; i < maxSlots; i++ {
		store.slot(fmt.Sprint(i), "e").put(cs)
	}
	checkCounters(t, store, "full", StoreCounters{Tickets: maxSlots, Keys: maxSlots, Stored: maxSlots})
	old := store.slot("0", "e") // still shared, or forgotten by the prune below
	store.slot("new", "e")
	c := store.Counters()
	if c.Keys >= maxSlots/2+1 || c.Evicted == 0 {
		t.Fatalf("after the prune: %+v", c)
	}
	checkCounters(t, store, "pruned", StoreCounters{Tickets: c.Tickets, Keys: c.Keys, Stored: maxSlots, Evicted: c.Evicted})
	// A slot the prune forgot still works for the views that hold it,
	// outside the counts; one still shared counts.
	store.mu.Lock()
	shared := store.slots["0"] == old
	store.mu.Unlock()
	old.put(cs)
	want := store.Counters()
	if wantStored := uint64(maxSlots); shared {
		wantStored++
		if want.Stored != wantStored {
			t.Fatalf("a put on a shared slot not counted: %+v", want)
		}
	} else if want.Stored != wantStored {
		t.Fatalf("a put on a forgotten slot counted: %+v", want)
	}
	checkCounters(t, store, "old slot used", want)
}

// TestStoreCountersConcurrent: puts, gets, failures and expiry from many
// goroutines keep the running counts equal to the contents (for -race).
func TestStoreCountersConcurrent(t *testing.T) {
	sessions := collectSessions(t, 4)
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	store := NewSessionStore(SessionStoreOptions{TicketsPerKey: 2, MaxAge: time.Hour, Now: clock})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				v := store.view(fmt.Sprint("k", (g+i)%5), "e")
				switch i % 4 {
				case 0, 1:
					v.Put("", sessions[i%len(sessions)])
				case 2:
					if _, ok := v.Get(""); ok {
						v.Put("", nil)
					}
				case 3:
					if _, ok := v.Get(""); ok {
						v.slot.observe(false, nil)
					}
				}
				if g == 0 && i%50 == 49 {
					mu.Lock()
					now = now.Add(2 * time.Hour)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	c := store.Counters()
	checkCounters(t, store, "after", c)
	if c.Stored == 0 || c.Evicted == 0 || c.Refused == 0 || c.Expired == 0 {
		t.Fatalf("some path never ran: %+v", c)
	}
}

// TestStoreCountersHandshakes: real handshakes through a policy; a rotated
// server ticket key makes the offered ticket refused.
func TestStoreCountersHandshakes(t *testing.T) {
	set := mustSet(t, pki.ECDSAP256, 0)
	cfg := serverWith(set, func(c *tls.Config) { c.MaxVersion = tls.VersionTLS13 })
	rotate := func() {
		var k [32]byte
		rand.Read(k[:])
		cfg.SetSessionTicketKeys([][32]byte{k})
	}
	rotate()
	srv := startServer(t, cfg)
	store := NewSessionStore(SessionStoreOptions{})
	p := mustPolicy(t, PolicyConfig{SessionReuse: true}, store)
	target := Target{Addr: srv.addr}
	for i, w := range []bool{false, true, false} {
		if i == 2 {
			rotate()
		}
		cs, err := dialOnce(t, p, target, Vars{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		srv.next(t)
		if cs.DidResume != w {
			t.Fatalf("dial %d: resumed %v", i, cs.DidResume)
		}
	}
	// TLS 1.3 brings a ticket with every handshake, resumed or not: A, then
	// B; B is offered after the rotation and refused, C arrives.
	checkCounters(t, store, "handshakes", StoreCounters{Tickets: 2, Keys: 1, Stored: 3, Refused: 1})
}
