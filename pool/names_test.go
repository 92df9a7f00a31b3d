package pool

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/dnstest"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

func newNames(t *testing.T, d *dnstest.Server, ipv6 bool, timeout time.Duration, max int) *Names {
	t.Helper()
	n := NewNames(ResolverConfig{Servers: []string{d.Addr()}, IPv4: true, IPv6: ipv6, Timeout: timeout}, max, nil)
	t.Cleanup(n.Close)
	return n
}

func addrTexts(addrs []netip.Addr) []string {
	var out []string
	for _, a := range addrs {
		out = append(out, a.String())
	}
	return out
}

// TestNamesKeepsAnswers: an answer is kept for its TTL (one query for two
// lookups), IPv4 first; NXDOMAIN is kept too; SERVFAIL is not.
func TestNamesKeepsAnswers(t *testing.T) {
	d := startDNS(t)
	d.SetTTL(60)
	d.SetAddrs("app.test", "::1", "127.0.0.2", "127.0.0.3")
	n := newNames(t, d, true, 2*time.Second, 0)
	ctx := context.Background()
	if _, ok := n.Cached("app.test", time.Now()); ok {
		t.Fatal("Cached reports an answer before any lookup")
	}
	for i := range 2 {
		addrs, err := n.Lookup(ctx, "app.test")
		if err != nil {
			t.Fatal(err)
		}
		if got, want := addrTexts(addrs), []string{"127.0.0.2", "127.0.0.3", "::1"}; !slices.Equal(got, want) {
			t.Fatalf("lookup %d: %v, want %v", i, got, want)
		}
	}
	if udp, tcp := d.Queries(); udp+tcp != 2 { // A and AAAA, once
		t.Errorf("%d queries for two lookups of one name, want 2 (A and AAAA once)", udp+tcp)
	}
	if addrs, ok := n.Cached("app.test", time.Now()); !ok || len(addrs) != 3 {
		t.Errorf("Cached = %v, %v; want the 3 addresses", addrs, ok)
	}
	if _, ok := n.Cached("app.test", time.Now().Add(61*time.Second)); ok {
		t.Error("Cached reports an answer past its TTL")
	}

	// TTL 0: kept for a second all the same, as NGINX's whole-second
	// clock keeps it, so that each session does not ask again.
	d.SetTTL(0)
	d.SetAddrs("zero.test", "127.0.0.4")
	asked := time.Now()
	if _, err := n.Lookup(ctx, "zero.test"); err != nil {
		t.Fatal(err)
	}
	if _, ok := n.Cached("zero.test", asked.Add(900*time.Millisecond)); !ok {
		t.Error("a TTL 0 answer is not kept for its second")
	}
	d.SetTTL(60)

	// NXDOMAIN: kept (valid= or 10s).
	before, _ := d.Queries()
	for range 2 {
		if _, err := n.Lookup(ctx, "missing.test"); err == nil || err.Error() != "3: Host not found" {
			t.Fatalf("missing name: %v, want 3: Host not found", err)
		}
	}
	if after, _ := d.Queries(); after-before != 2 {
		t.Errorf("%d queries for two lookups of a missing name, want 2 (A and AAAA once)", after-before)
	}

	// SERVFAIL: not kept, the next lookup asks again.
	d.SetMode(dnstest.ServFail)
	before, _ = d.Queries()
	for range 2 {
		if _, err := n.Lookup(ctx, "other.test"); err == nil || err.Error() != "2: Server failure" {
			t.Fatalf("SERVFAIL: %v, want 2: Server failure", err)
		}
	}
	if after, _ := d.Queries(); after-before != 4 {
		t.Errorf("%d queries for two lookups answered SERVFAIL, want 4 (asked again)", after-before)
	}
	// What the metrics read: app.test asked once, then kept (and once
	// more by Cached); missing.test asked once, then kept; other.test
	// asked twice.
	st := n.stats
	// zero.test asked once, then read by Cached.
	if c, ok, f := st.Cached.Load(), st.OK.Load(), st.Failed.Load(); c != 4 || ok != 2 || f != 3 {
		t.Errorf("counts: cached %d, ok %d, failed %d; want 4, 2, 3", c, ok, f)
	}
}

// TestNamesOneQuery: many sessions asking for a name a name server does not
// answer wait for one query and all fail when resolver_timeout ends; one
// that leaves early does not end it for the others.
func TestNamesOneQuery(t *testing.T) {
	d := startDNS(t)
	d.SetMode(dnstest.Drop)
	n := newNames(t, d, false, 500*time.Millisecond, 0)
	gone, leave := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make([]error, 50)
	for i := range errs {
		ctx := context.Background()
		if i == 0 {
			ctx = gone
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = n.Lookup(ctx, "slow.test")
		}()
	}
	leave()
	wg.Wait()
	if !errors.Is(errs[0], context.Canceled) {
		t.Errorf("the session that left got %v, want context.Canceled", errs[0])
	}
	for i, err := range errs[1:] {
		if err == nil || err.Error() != "110: Operation timed out" {
			t.Fatalf("lookup %d: %v, want 110: Operation timed out", i+1, err)
		}
	}
	if udp, _ := d.Queries(); udp != 1 {
		t.Errorf("%d queries for 50 lookups of one name, want 1", udp)
	}
}

// TestNamesBounded: names in flight fill the room at most; a new one then
// fails at once; answers kept are evicted least recently used first.
func TestNamesBounded(t *testing.T) {
	d := startDNS(t)
	d.SetTTL(60)
	for i := range 4 {
		d.SetAddrs(fmt.Sprintf("n%d.test", i), fmt.Sprintf("127.0.0.%d", i+2))
	}
	n := newNames(t, d, false, 2*time.Second, 2)
	ctx := context.Background()
	for i := range 4 {
		if _, err := n.Lookup(ctx, fmt.Sprintf("n%d.test", i)); err != nil {
			t.Fatal(err)
		}
		if n.Len() > 2 {
			t.Fatalf("%d names kept, want at most 2", n.Len())
		}
	}
	if _, ok := n.Cached("n3.test", time.Now()); !ok {
		t.Error("the latest answer is not kept")
	}
	if _, ok := n.Cached("n0.test", time.Now()); ok {
		t.Error("the least recently used answer is still kept")
	}

	d.SetMode(dnstest.Drop)
	n = newNames(t, d, false, 300*time.Millisecond, 2)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.Lookup(ctx, fmt.Sprintf("hang%d.test", i))
		}()
	}
	testutil.WaitFor(t, "two lookups in flight", 5*time.Second, func() bool { return n.Len() == 2 })
	if _, err := n.Lookup(ctx, "third.test"); !errors.Is(err, ErrTooManyNames) {
		t.Errorf("a third name while two are in flight: %v, want ErrTooManyNames", err)
	}
	wg.Wait()
}

// TestNamesMalformed: a name no name server could answer is not sent.
func TestNamesMalformed(t *testing.T) {
	d := startDNS(t)
	n := newNames(t, d, false, time.Second, 0)
	for _, name := range []string{"a..b", strings.Repeat("x", 64) + ".test", strings.Repeat("abcdefgh.", 32)} {
		if _, err := n.Lookup(context.Background(), name); err == nil || err.Error() != "1: Format error" {
			t.Errorf("Lookup(%q) = %v, want 1: Format error", name, err)
		}
	}
	if udp, tcp := d.Queries(); udp+tcp != 0 {
		t.Errorf("%d queries sent for malformed names", udp+tcp)
	}
	if r := n.stats.Refused.Load(); r != 3 {
		t.Errorf("%d lookups counted refused, want 3", r)
	}
}
