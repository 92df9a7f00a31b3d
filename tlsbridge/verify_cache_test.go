package tlsbridge

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/pki"
)

// TestVerifyChainCache: a chain seen before is not rebuilt, but name,
// depth and validity are checked every time.
func TestVerifyChainCache(t *testing.T) {
	set, err := pki.NewSet(pki.ECDSAP256, 2)
	if err != nil {
		t.Fatal(err)
	}
	ts := &trustStore{roots: pki.Pool(set.Root), now: time.Now}
	certs := []*x509.Certificate{set.Server.Leaf.Cert}
	for _, ic := range set.Server.Intermediates {
		certs = append(certs, ic.Cert)
	}
	if err := ts.verify(certs, "localhost", 2); err != nil {
		t.Fatal(err)
	}
	if len(ts.chains) != 1 {
		t.Fatalf("%d cached chains, want 1", len(ts.chains))
	}
	for _, tc := range []struct {
		name   string
		depth  int
		reason Reason
	}{
		{"other.example", 2, ReasonNameMismatch},
		{"localhost", 1, ReasonDepth},
	} {
		err := ts.verify(certs, tc.name, tc.depth)
		if Classify(err) != tc.reason {
			t.Fatalf("%s depth %d: %v, want %v", tc.name, tc.depth, err, tc.reason)
		}
	}
	// A year later the cached path has expired.
	ts.now = func() time.Time { return time.Now().Add(365 * 24 * time.Hour) }
	if err := ts.verify(certs, "localhost", 2); Classify(err) != ReasonExpired {
		t.Fatalf("after expiry: %v", err)
	}
	if len(ts.chains) != 1 {
		t.Fatalf("%d cached chains, want 1", len(ts.chains))
	}
}
