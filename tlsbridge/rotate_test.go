package tlsbridge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/pki"
)

// replaceFile writes data next to path and renames it over path, as a
// certificate manager rotating a file does.
func replaceFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".new")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// newClientChain makes another client chain under set's root.
func newClientChain(t *testing.T, set *pki.Set, cn string) *pki.Chain {
	t.Helper()
	ch, err := pki.NewChain(set.Root, 0, cn, pki.Options{Key: pki.ECDSAP256, Usage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// clientSerial is the serial of the client certificate the server saw on
// its next connection, which must have succeeded.
func clientSerial(t *testing.T, srv *testServer) *big.Int {
	t.Helper()
	sc := srv.next(t)
	if sc.err != nil {
		t.Fatalf("server: handshake failed: %v", sc.err)
	}
	if len(sc.state.PeerCertificates) == 0 {
		t.Fatal("server: no client certificate")
	}
	return sc.state.PeerCertificates[0].SerialNumber
}

// fullHandshake dials target once with a full handshake (no ticket offered)
// and fails the test if it fails.
func fullHandshake(t *testing.T, p *Policy, target Target) {
	t.Helper()
	cfg, err := p.ConfigWithoutResumption(target, Vars{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dialOnce(t, p, target, Vars{}, cfg); err != nil {
		t.Fatalf("full handshake: %v", err)
	}
}

// TestReloadClientCertificate rotates the client certificate an upstream
// requires and checks: with real handshakes, which certificate the
// upstream sees; that broken or half-rotated files keep the old material
// with an error naming the file; that sessions made under the old material
// are not resumed under the new.
func TestReloadClientCertificate(t *testing.T) {
	set := mustSet(t, pki.ECDSAP256, 0)
	f := pkiFiles(t, set)
	srv := startServer(t, set.ServerConfig()) // requires a client certificate under set.Root
	store := NewSessionStore(SessionStoreOptions{})
	p := mustPolicy(t, PolicyConfig{Certificate: f.ClientCert, CertificateKey: f.ClientKey,
		Verify: true, VerifyDepth: 1, TrustedCertificate: f.CA, SessionReuse: true}, store)
	target := Target{Addr: srv.addr, Host: "localhost"}
	serial1 := set.Client.Leaf.Cert.SerialNumber

	if got := p.WatchedFiles(); strings.Join(got, " ") != strings.Join([]string{f.ClientCert, f.ClientKey, f.CA}, " ") {
		t.Fatalf("WatchedFiles = %q", got)
	}
	// Full, then resumed: the session store works with this policy.
	if _, err := dialOnce(t, p, target, Vars{}, nil); err != nil {
		t.Fatal(err)
	}
	if got := clientSerial(t, srv); got.Cmp(serial1) != 0 {
		t.Fatalf("server saw serial %X, want %X", got, serial1)
	}
	cs, err := dialOnce(t, p, target, Vars{}, nil)
	if err != nil || !cs.DidResume {
		t.Fatalf("second handshake: resumed %v, err %v", cs.DidResume, err)
	}
	clientSerial(t, srv)
	fp1 := p.Fingerprint()

	steps := []struct {
		name    string
		write   map[string][]byte // path -> new content
		changed bool
		errHas  []string // substrings of Reload's error; nil: no error
		errDir  string   // the ConfigError's directive
	}{
		{name: "nothing changed", changed: false},
		{name: "same content, new file", write: map[string][]byte{f.ClientCert: set.Client.ChainPEM()}, changed: false},
		{name: "certificate without its key", write: map[string][]byte{f.ClientCert: newClientChain(t, set, "half").ChainPEM()},
			errHas: []string{f.ClientKey, "does not match", f.ClientCert}, errDir: "proxy_ssl_certificate_key"},
		{name: "garbage certificate", write: map[string][]byte{f.ClientCert: []byte("-----BEGIN garbage\n")},
			errHas: []string{f.ClientCert, "no PEM certificate found"}, errDir: "proxy_ssl_certificate"},
		{name: "garbage key", write: map[string][]byte{f.ClientCert: set.Client.ChainPEM(), f.ClientKey: []byte("junk")},
			errHas: []string{f.ClientKey, "no PEM private key found"}, errDir: "proxy_ssl_certificate_key"},
		{name: "certificate removed", write: map[string][]byte{f.ClientKey: set.Client.Leaf.KeyPEM(), f.ClientCert: nil},
			errHas: []string{f.ClientCert, "no such file"}, errDir: "proxy_ssl_certificate"},
	}
	for _, st := range steps {
		for path, data := range st.write {
			if data == nil {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
				continue
			}
			replaceFile(t, path, data)
		}
		changed, err := p.Reload()
		if changed != st.changed {
			t.Errorf("%s: changed = %v, want %v", st.name, changed, st.changed)
		}
		if st.errHas == nil {
			if err != nil {
				t.Errorf("%s: Reload: %v", st.name, err)
			}
		} else {
			var ce *ConfigError
			if err == nil || !errors.As(err, &ce) || ce.Directive != st.errDir {
				t.Fatalf("%s: Reload error = %v, want a ConfigError for %s", st.name, err, st.errDir)
			}
			for _, s := range st.errHas {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("%s: Reload error %q does not say %q", st.name, err, s)
				}
			}
		}
		// The old material stays: a full handshake still presents serial 1.
		fullHandshake(t, p, target)
		if got := clientSerial(t, srv); got.Cmp(serial1) != 0 {
			t.Fatalf("%s: server saw serial %X, want the old %X", st.name, got, serial1)
		}
		if p.Fingerprint() != fp1 {
			t.Fatalf("%s: fingerprint changed without a swap", st.name)
		}
	}

	// A complete rotation: certificate and key.
	c2 := newClientChain(t, set, "tlsrelay client 2")
	replaceFile(t, f.ClientCert, c2.ChainPEM())
	replaceFile(t, f.ClientKey, c2.Leaf.KeyPEM())
	changed, err := p.Reload()
	if err != nil || !changed {
		t.Fatalf("Reload after rotation: changed %v, err %v", changed, err)
	}
	if p.Fingerprint() == fp1 {
		t.Fatal("fingerprint unchanged after a new client certificate")
	}
	// The ticket made under the old certificate is not offered: a full
	// handshake with the new certificate, then resumption under it.
	cs, err = dialOnce(t, p, target, Vars{}, nil)
	if err != nil || cs.DidResume {
		t.Fatalf("first handshake after rotation: resumed %v (want a full one), err %v", cs.DidResume, err)
	}
	if got := clientSerial(t, srv); got.Cmp(c2.Leaf.Cert.SerialNumber) != 0 {
		t.Fatalf("server saw serial %X, want the new %X", got, c2.Leaf.Cert.SerialNumber)
	}
	cs, err = dialOnce(t, p, target, Vars{}, nil)
	if err != nil || !cs.DidResume {
		t.Fatalf("second handshake after rotation: resumed %v, err %v", cs.DidResume, err)
	}
	clientSerial(t, srv)
	if changed, err := p.Reload(); changed || err != nil {
		t.Fatalf("Reload without a change: changed %v, err %v", changed, err)
	}
}

// TestReloadEncryptedKey: the password file is re-read with the key.
func TestReloadEncryptedKey(t *testing.T) {
	set := mustSet(t, pki.ECDSAP256, 0)
	f := pkiFiles(t, set)
	enc, err := set.Client.Leaf.EncryptedKeyPEM("one")
	if err != nil {
		t.Fatal(err)
	}
	replaceFile(t, f.ClientKey, enc)
	pw := writeFile(t, "pw", []byte("one\n"))
	srv := startServer(t, set.ServerConfig())
	p := mustPolicy(t, PolicyConfig{Certificate: f.ClientCert, CertificateKey: f.ClientKey, PasswordFile: pw}, nil)
	target := Target{Addr: srv.addr}

	c2 := newClientChain(t, set, "tlsrelay client 2")
	enc2, err := c2.Leaf.EncryptedKeyPEM("two")
	if err != nil {
		t.Fatal(err)
	}
	replaceFile(t, f.ClientCert, c2.ChainPEM())
	replaceFile(t, f.ClientKey, enc2)
	var ce *ConfigError
	if _, err := p.Reload(); !errors.As(err, &ce) || ce.Directive != "proxy_ssl_password_file" || !strings.Contains(err.Error(), pw) {
		t.Fatalf("Reload with the old password: %v", err)
	}
	fullHandshake(t, p, target)
	if got := clientSerial(t, srv); got.Cmp(set.Client.Leaf.Cert.SerialNumber) != 0 {
		t.Fatalf("server saw serial %X, want the old one", got)
	}
	replaceFile(t, pw, []byte("two\n"))
	if changed, err := p.Reload(); !changed || err != nil {
		t.Fatalf("Reload with the new password: changed %v, err %v", changed, err)
	}
	fullHandshake(t, p, target)
	if got := clientSerial(t, srv); got.Cmp(c2.Leaf.Cert.SerialNumber) != 0 {
		t.Fatalf("server saw serial %X, want the new one", got)
	}
}

// TestReloadTrust rotates the trusted certificates and the CRL.
func TestReloadTrust(t *testing.T) {
	set := mustSet(t, pki.ECDSAP256, 0)
	other := mustSet(t, pki.ECDSAP256, 0)
	f := pkiFiles(t, set)
	srv := startServer(t, serverWith(set, nil))
	crl, err := set.Root.CRL(nil, time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	crlFile := writeFile(t, "crl.pem", crl)
	p := mustPolicy(t, PolicyConfig{Verify: true, VerifyDepth: 1, TrustedCertificate: f.CA, CRL: crlFile}, nil)
	target := Target{Addr: srv.addr, Host: "localhost"}
	dial := func() error {
		t.Helper()
		_, err := dialOnce(t, p, target, Vars{}, nil)
		srv.next(t)
		return err
	}
	if err := dial(); err != nil {
		t.Fatal(err)
	}
	revoked, err := set.Root.CRL([]*pki.Cert{set.Server.Leaf}, time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name      string
		path      string
		data      []byte
		changed   bool
		errDir    string // Reload fails with a ConfigError for it
		handshake Reason // ReasonNone: the handshake succeeds
	}{
		{"other root", f.CA, other.Root.CertPEM(), true, "", ReasonUnknownCA},
		{"garbage CA", f.CA, []byte("x"), false, "proxy_ssl_trusted_certificate", ReasonUnknownCA},
		{"both roots", f.CA, append(other.Root.CertPEM(), set.Root.CertPEM()...), true, "", ReasonNone},
		{"revoking CRL", crlFile, revoked, true, "", ReasonRevoked},
		{"garbage CRL", crlFile, set.Root.CertPEM(), false, "proxy_ssl_crl", ReasonRevoked},
		{"clean CRL", crlFile, crl, true, "", ReasonNone},
	}
	for _, st := range steps {
		replaceFile(t, st.path, st.data)
		fp := p.Fingerprint()
		changed, err := p.Reload()
		var ce *ConfigError
		switch {
		case st.errDir == "" && err != nil:
			t.Fatalf("%s: Reload: %v", st.name, err)
		case st.errDir != "" && (!errors.As(err, &ce) || ce.Directive != st.errDir || !strings.Contains(err.Error(), st.path)):
			t.Fatalf("%s: Reload error = %v, want one for %s naming %s", st.name, err, st.errDir, st.path)
		case changed != st.changed:
			t.Fatalf("%s: changed = %v", st.name, changed)
		case changed == (p.Fingerprint() == fp):
			t.Fatalf("%s: changed %v but fingerprint %s -> %s", st.name, changed, fp, p.Fingerprint())
		}
		if got := Classify(dial()); got != st.handshake {
			t.Fatalf("%s: handshake: %s, want %s", st.name, got, st.handshake)
		}
	}
}

// TestReloadConcurrentHandshakes swaps the client certificate back and
// forth while handshakes run: every handshake succeeds and presents one of
// the two certificates whole (run with -race).
func TestReloadConcurrentHandshakes(t *testing.T) {
	set := mustSet(t, pki.ECDSAP256, 0)
	f := pkiFiles(t, set)
	srv := startServer(t, set.ServerConfig())
	store := NewSessionStore(SessionStoreOptions{})
	p := mustPolicy(t, PolicyConfig{Certificate: f.ClientCert, CertificateKey: f.ClientKey, SessionReuse: true}, store)
	target := Target{Addr: srv.addr}
	c2 := newClientChain(t, set, "tlsrelay client 2")
	pems := [][2][]byte{{set.Client.ChainPEM(), set.Client.Leaf.KeyPEM()}, {c2.ChainPEM(), c2.Leaf.KeyPEM()}}
	want := map[string]bool{set.Client.Leaf.Cert.SerialNumber.String(): true, c2.Leaf.Cert.SerialNumber.String(): true}

	const workers, each = 4, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				cfg, err := p.ClientConfig(target, Vars{})
				if err == nil {
					_, err = handshakeNoFatal(target.Addr, cfg)
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	swaps := 0
	for i := 0; i < 6; i++ {
		pair := pems[(i+1)%2]
		// Key first, then certificate: between the two the files do not
		// match and Reload must keep the current material.
		replaceFile(t, f.ClientKey, pair[1])
		if changed, err := p.Reload(); changed || err == nil {
			t.Fatalf("swap %d: half-rotated files: changed %v, err %v", i, changed, err)
		}
		replaceFile(t, f.ClientCert, pair[0])
		if changed, err := p.Reload(); !changed || err != nil {
			t.Fatalf("swap %d: changed %v, err %v", i, changed, err)
		}
		swaps++
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("handshake during reloads: %v", err)
	}
	for i := 0; i < workers*each; i++ {
		sc := srv.next(t)
		if sc.err != nil {
			t.Fatalf("server: %v", sc.err)
		}
		if s := sc.state.PeerCertificates[0].SerialNumber.String(); !want[s] {
			t.Fatalf("server saw serial %s, neither of the two", s)
		}
	}
	if swaps != 6 {
		t.Fatalf("%d swaps", swaps)
	}
}

// handshakeNoFatal is one client handshake that reads the server's byte,
// for goroutines other than the test's.
func handshakeNoFatal(addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil {
		return tls.ConnectionState{}, fmt.Errorf("reading: %w", err)
	}
	return c.(*tls.Conn).ConnectionState(), nil
}

// TestWatch: Watch notices rotations by itself, logs each swap and each
// failure, keeps the old material on failure and stops with its context.
func TestWatch(t *testing.T) {
	set := mustSet(t, pki.ECDSAP256, 0)
	f := pkiFiles(t, set)
	srv := startServer(t, set.ServerConfig())
	p := mustPolicy(t, PolicyConfig{Certificate: f.ClientCert, CertificateKey: f.ClientKey}, nil)
	target := Target{Addr: srv.addr}

	logs := make(chan string, 256)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Watch(ctx, 5*time.Millisecond, func(format string, args ...any) { logs <- fmt.Sprintf(format, args...) })
	}()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Watch did not return after its context was cancelled")
		}
	}()
	// waitLog returns the first log line containing want; lines before
	// it must contain allowed (a poll between two renames sees files that
	// do not match, which is logged and kept).
	waitLog := func(want, allowed string) string {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case l := <-logs:
				if strings.Contains(l, want) {
					return l
				}
				if allowed == "" || !strings.Contains(l, allowed) {
					t.Fatalf("unexpected log %q while waiting for %q", l, want)
				}
			case <-timeout:
				t.Fatalf("no log saying %q within 10s", want)
				return ""
			}
		}
	}

	c2 := newClientChain(t, set, "tlsrelay client 2")
	replaceFile(t, f.ClientCert, c2.ChainPEM())
	replaceFile(t, f.ClientKey, c2.Leaf.KeyPEM())
	l := waitLog("reloaded", "keeping the files loaded before")
	for _, s := range []string{"proxy_ssl_certificate from \"" + f.ClientCert + "\"", fmt.Sprintf("serial %X", c2.Leaf.Cert.SerialNumber)} {
		if !strings.Contains(l, s) {
			t.Errorf("log %q does not say %q", l, s)
		}
	}
	fullHandshake(t, p, target)
	if got := clientSerial(t, srv); got.Cmp(c2.Leaf.Cert.SerialNumber) != 0 {
		t.Fatalf("after Watch's reload the server saw serial %X, want %X", got, c2.Leaf.Cert.SerialNumber)
	}

	replaceFile(t, f.ClientCert, []byte("garbage"))
	l = waitLog("keeping the files loaded before", "")
	if !strings.Contains(l, f.ClientCert) || !strings.Contains(l, "no PEM certificate found") {
		t.Errorf("failure log %q does not name the file and the reason", l)
	}
	fullHandshake(t, p, target)
	if got := clientSerial(t, srv); got.Cmp(c2.Leaf.Cert.SerialNumber) != 0 {
		t.Fatalf("after a bad file the server saw serial %X, want the kept %X", got, c2.Leaf.Cert.SerialNumber)
	}

	c3 := newClientChain(t, set, "tlsrelay client 3")
	replaceFile(t, f.ClientKey, c3.Leaf.KeyPEM())
	replaceFile(t, f.ClientCert, c3.ChainPEM())
	waitLog(fmt.Sprintf("serial %X", c3.Leaf.Cert.SerialNumber), "keeping the files loaded before")
	fullHandshake(t, p, target)
	if got := clientSerial(t, srv); got.Cmp(c3.Leaf.Cert.SerialNumber) != 0 {
		t.Fatalf("server saw serial %X, want %X", got, c3.Leaf.Cert.SerialNumber)
	}
}

// TestWatchNothing: a policy without files to watch returns at once.
func TestWatchNothing(t *testing.T) {
	p := mustPolicy(t, PolicyConfig{}, nil)
	if got := p.WatchedFiles(); len(got) != 0 {
		t.Fatalf("WatchedFiles = %q", got)
	}
	done := make(chan struct{})
	go func() {
		p.Watch(context.Background(), time.Millisecond, nil)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Watch without files did not return")
	}
	if changed, err := p.Reload(); changed || err != nil {
		t.Fatalf("Reload without files: changed %v, err %v", changed, err)
	}
}

// TestRebuiltPolicyResumes: a policy built again from the same files (a
// configuration reload) has the fingerprint of the one it replaces and
// resumes its sessions, also after a rotation by Reload; a policy built
// from the old files does not share the rotated one's sessions.
func TestRebuiltPolicyResumes(t *testing.T) {
	set := mustSet(t, pki.ECDSAP256, 0)
	f := pkiFiles(t, set)
	srv := startServer(t, set.ServerConfig())
	store := NewSessionStore(SessionStoreOptions{})
	pc := PolicyConfig{Certificate: f.ClientCert, CertificateKey: f.ClientKey,
		Verify: true, VerifyDepth: 1, TrustedCertificate: f.CA, SessionReuse: true}
	target := Target{Addr: srv.addr, Host: "localhost"}
	dial := func(p *Policy) bool {
		t.Helper()
		cs, err := dialOnce(t, p, target, Vars{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		clientSerial(t, srv)
		return cs.DidResume
	}
	p1 := mustPolicy(t, pc, store)
	if dial(p1) {
		t.Fatal("first handshake resumed")
	}
	p2 := mustPolicy(t, pc, store)
	if p2.Fingerprint() != p1.Fingerprint() || !dial(p2) {
		t.Fatal("a policy rebuilt from the same files does not resume the sessions of the one it replaces")
	}
	oldFiles := pkiFiles(t, set) // a copy of the files as they were
	c2 := newClientChain(t, set, "tlsrelay client 2")
	replaceFile(t, f.ClientCert, c2.ChainPEM())
	replaceFile(t, f.ClientKey, c2.Leaf.KeyPEM())
	if changed, err := p2.Reload(); !changed || err != nil {
		t.Fatalf("Reload: changed %v, err %v", changed, err)
	}
	if dial(p2) {
		t.Fatal("resumed a session made with the old client certificate")
	}
	p3 := mustPolicy(t, pc, store)
	if p3.Fingerprint() != p2.Fingerprint() || !dial(p3) {
		t.Fatal("a policy rebuilt after a rotation does not resume the rotated policy's sessions")
	}
	old := pc
	old.Certificate, old.CertificateKey = oldFiles.ClientCert, oldFiles.ClientKey
	if p4 := mustPolicy(t, old, store); p4.Fingerprint() != p1.Fingerprint() || p4.Fingerprint() == p3.Fingerprint() {
		t.Fatal("fingerprints do not follow the client certificate")
	}
}
