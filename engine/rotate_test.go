package engine

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// TestCertificateRotation: with proxy_ssl_watch, a client certificate
// replaced on disk (written aside, renamed over) is presented to the
// upstream from the next handshake on, without a signal; a session held
// from before is untouched; a broken replacement is logged and the
// working certificate kept.
func TestCertificateRotation(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	text := strings.Replace(guideConf(ups, "proxy_ssl_watch 1s;"), "proxy_ssl_session_reuse on", "proxy_ssl_session_reuse off", 1)
	tb := startEngine(t, dir, text)
	held := holdSession(t, tb.addr)
	if _, err := echoOnce(tb.addr, []byte("old"), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := ups[0].Subjects()["tlsrelay client"]; n != 2 {
		t.Fatalf("before rotation the upstream saw %v", ups[0].Subjects())
	}

	next, err := pki.NewChain(set.Root, 1, "tlsrelay client rotated", pki.Options{
		Key: pki.ECDSAP256, Usage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		t.Fatal(err)
	}
	// The key first, then the certificate: a watcher that looks in
	// between sees a pair that does not match, refuses it and keeps the
	// old one; the next look takes the pair.
	replace(t, filepath.Join(dir, "client.key"), next.Leaf.KeyPEM())
	replace(t, filepath.Join(dir, "client.pem"), next.ChainPEM())
	testutil.WaitFor(t, "the watcher to load the new certificate", 20*time.Second, func() bool {
		return strings.Contains(tb.logText(), "reloaded")
	})
	if _, err := echoOnce(tb.addr, []byte("new"), 10*time.Second); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
	if n := ups[0].Subjects()["tlsrelay client rotated"]; n != 1 {
		t.Errorf("after rotation the upstream saw %v, want one handshake with the new certificate", ups[0].Subjects())
	}
	if err := held.echo(4096); err != nil {
		t.Errorf("session held across the rotation: %v", err)
	}

	replace(t, filepath.Join(dir, "client.pem"), []byte("not a certificate\n"))
	testutil.WaitFor(t, "the watcher to refuse the broken file", 20*time.Second, func() bool {
		return strings.Contains(tb.logText(), "keeping the files loaded before")
	})
	if _, err := echoOnce(tb.addr, []byte("kept"), 10*time.Second); err != nil {
		t.Fatalf("after a broken replacement: %v", err)
	}
	if n := ups[0].Subjects()["tlsrelay client rotated"]; n != 2 {
		t.Errorf("after the broken replacement the upstream saw %v", ups[0].Subjects())
	}
}

// replace writes data beside path and renames it over path, as
// certificate tools do.
func replace(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
