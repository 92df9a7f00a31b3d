package tlsbridge

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// serverWith returns a server config for set's server chain, no client
// certificate required.
func serverWith(set *pki.Set, edit func(*tls.Config)) *tls.Config {
	c := &tls.Config{Certificates: []tls.Certificate{set.Server.TLSCertificate()}}
	if edit != nil {
		edit(c)
	}
	return c
}

func TestProtocols(t *testing.T) {
	set := mustSet(t, pki.ECDSAP256, 0)
	f := pkiFiles(t, set)
	for _, v := range allVersions {
		t.Run(versionName(v), func(t *testing.T) {
			srv := startServer(t, serverWith(set, func(c *tls.Config) { c.MinVersion, c.MaxVersion = v, v }))
			pc := PolicyConfig{Protocols: []string{versionName(v)}, Verify: true, VerifyDepth: 1, TrustedCertificate: f.CA}
			if v < tls.VersionTLS12 {
				// The default list has TLS 1.2 suites only.
				pc.Ciphers = "ECDHE+AES+SHA1"
			}
			p := mustPolicy(t, pc, nil)
			cs, err := dialOnce(t, p, Target{Addr: srv.addr, Host: "localhost"}, Vars{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if cs.Version != v {
				t.Fatalf("negotiated %s", tls.VersionName(cs.Version))
			}
			if v < tls.VersionTLS12 && !slices.ContainsFunc(p.Warnings(), func(w string) bool { return strings.Contains(w, versionName(v)+" is enabled") }) {
				t.Fatalf("no warning for %s: %q", versionName(v), p.Warnings())
			}
		})
	}
	t.Run("mismatch", func(t *testing.T) {
		srv := startServer(t, serverWith(set, func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }))
		p := mustPolicy(t, PolicyConfig{Protocols: []string{"TLSv1.3"}}, nil)
		_, err := dialOnce(t, p, Target{Addr: srv.addr}, Vars{}, nil)
		if Classify(err) != ReasonProtocol {
			t.Fatalf("reason %s for %v", Classify(err), err)
		}
		srv10 := startServer(t, serverWith(set, func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS10 }))
		p = mustPolicy(t, PolicyConfig{}, nil) // default TLSv1.2 TLSv1.3
		_, err = dialOnce(t, p, Target{Addr: srv10.addr}, Vars{}, nil)
		if Classify(err) != ReasonProtocol {
			t.Fatalf("reason %s for %v", Classify(err), err)
		}
	})
	t.Run("config", func(t *testing.T) {
		for _, bad := range []string{"SSLv3", "SSLv2", "TLSv1.4"} {
			_, err := NewPolicy(PolicyConfig{Protocols: []string{"TLSv1.2", bad}}, nil)
			if err == nil || !strings.Contains(err.Error(), bad) {
				t.Errorf("%s: %v", bad, err)
			}
		}
		p := mustPolicy(t, PolicyConfig{Protocols: []string{"TLSv1", "TLSv1.2", "TLSv1.3"}}, nil)
		if p.minVer != tls.VersionTLS12 || p.maxVer != tls.VersionTLS13 {
			t.Fatalf("gap: span %x-%x", p.minVer, p.maxVer)
		}
		if !slices.ContainsFunc(p.Warnings(), func(w string) bool { return strings.Contains(w, "TLSv1 not used") }) {
			t.Fatalf("no gap warning: %q", p.Warnings())
		}
	})
}

func TestCipherHandshakes(t *testing.T) {
	set := mustSet(t, pki.ECDSAP256, 0)
	// A TLS 1.2 server that accepts one suite only, an insecure one.
	srv := startServer(t, serverWith(set, func(c *tls.Config) {
		c.MaxVersion = tls.VersionTLS12
		c.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256}
	}))
	p := mustPolicy(t, PolicyConfig{Ciphers: "ECDHE-ECDSA-AES128-SHA256"}, nil)
	cs, err := dialOnce(t, p, Target{Addr: srv.addr}, Vars{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cs.CipherSuite != tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256 {
		t.Fatalf("suite %s", tls.CipherSuiteName(cs.CipherSuite))
	}
	p = mustPolicy(t, PolicyConfig{Ciphers: "ECDHE+AESGCM"}, nil)
	_, err = dialOnce(t, p, Target{Addr: srv.addr}, Vars{}, nil)
	if Classify(err) != ReasonCipher {
		t.Fatalf("reason %s for %v", Classify(err), err)
	}
	// A string with no suite crypto/tls has is a configuration error while
	// TLS 1.2 is on, and fine with TLS 1.3 only.
	_, err = NewPolicy(PolicyConfig{Ciphers: "DHE-RSA-AES128-GCM-SHA256"}, nil)
	if err == nil || !strings.Contains(err.Error(), "no cipher suite crypto/tls implements") {
		t.Fatalf("DHE only: %v", err)
	}
	p = mustPolicy(t, PolicyConfig{Ciphers: "DHE-RSA-AES128-GCM-SHA256", Protocols: []string{"TLSv1.3"}}, nil)
	if p.Ciphers().Missing[0] != "DHE-RSA-AES128-GCM-SHA256" {
		t.Fatalf("missing %v", p.Ciphers().Missing)
	}
	if _, err := NewPolicy(PolicyConfig{Ciphers: "NOSUCH"}, nil); err == nil || !strings.Contains(err.Error(), "no cipher match") {
		t.Fatalf("NOSUCH: %v", err)
	}
}

// TestFailureReasons makes each failure happen against a real server and
// checks its reason and text.
func TestFailureReasons(t *testing.T) {
	set := mustSet(t, pki.ECDSAP256, 1)
	f := pkiFiles(t, set)
	other := mustSet(t, pki.ECDSAP256, 0)
	fo := pkiFiles(t, other)
	verifyPolicy := func(ca string, depth int) *Policy {
		return mustPolicy(t, PolicyConfig{Verify: true, VerifyDepth: depth, TrustedCertificate: ca}, nil)
	}
	plain := startServer(t, serverWith(set, nil))
	for _, tc := range []struct {
		name   string
		p      *Policy
		host   string
		reason Reason
		text   string
	}{
		{"unknown CA", verifyPolicy(fo.CA, 1), "localhost", ReasonUnknownCA, "unable to get local issuer certificate"},
		{"name", verifyPolicy(f.CA, 1), "backend", ReasonNameMismatch, `upstream certificate does not match "backend"`},
		{"depth", verifyPolicy(f.CA, 0), "localhost", ReasonDepth, "upstream certificate chain has 1 intermediate certificate, proxy_ssl_verify_depth is 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dialOnce(t, tc.p, Target{Addr: plain.addr, Host: tc.host}, Vars{}, nil)
			if Classify(err) != tc.reason || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("reason %s, error %v; want %s, %q", Classify(err), err, tc.reason, tc.text)
			}
			plain.next(t)
		})
	}
	// The upstream refuses our client certificate: in TLS 1.2 the
	// handshake fails; in TLS 1.3 the alert comes with the first read.
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run("client cert refused "+versionName(v), func(t *testing.T) {
			mtls := startServer(t, serverWith(set, func(c *tls.Config) {
				c.MaxVersion = v
				c.ClientAuth = tls.RequireAndVerifyClientCert
				c.ClientCAs = pki.Pool(set.Root)
			}))
			p := mustPolicy(t, PolicyConfig{Certificate: fo.ClientCert, CertificateKey: fo.ClientKey}, nil)
			_, err := dialOnce(t, p, Target{Addr: mtls.addr}, Vars{}, nil)
			if Classify(err) != ReasonClientCertRefused {
				t.Fatalf("reason %s for %v", Classify(err), err)
			}
			if v < tls.VersionTLS13 {
				return // a TLS 1.2 server says handshake_failure for no certificate: ambiguous
			}
			p = mustPolicy(t, PolicyConfig{}, nil)
			_, err = dialOnce(t, p, Target{Addr: mtls.addr}, Vars{}, nil)
			if Classify(err) != ReasonClientCertRefused {
				t.Fatalf("no certificate: reason %s for %v", Classify(err), err)
			}
		})
	}
	t.Run("timeout", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err == nil {
				io.Copy(io.Discard, c) // a black hole
			}
		}()
		raw, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		cfg, _ := mustPolicy(t, PolicyConfig{}, nil).ClientConfig(Target{Addr: ln.Addr().String()}, Vars{})
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		err = tls.Client(raw, cfg).HandshakeContext(ctx)
		if Classify(err) != ReasonTimeout {
			t.Fatalf("reason %s for %v", Classify(err), err)
		}
	})
	t.Run("verify off", func(t *testing.T) {
		p := mustPolicy(t, PolicyConfig{}, nil)
		if _, err := dialOnce(t, p, Target{Addr: plain.addr, Host: "backend"}, Vars{}, nil); err != nil {
			t.Fatal(err)
		}
		plain.next(t)
		if !slices.Contains(p.Warnings(), "proxy_ssl_verify is off: the upstream certificate is not checked") {
			t.Fatalf("warnings %q", p.Warnings())
		}
	})
}

// TestOpenSSLServerTLSv1 shows what a Go server cannot: an OpenSSL server
// that speaks TLSv1 only (with @SECLEVEL=0, as OpenSSL 3 needs for it).
// The default cipher list has TLS 1.2 suites only: -t warns and the
// handshake fails; with CBC suites asked for it succeeds.
func TestOpenSSLServerTLSv1(t *testing.T) {
	srv := startOpenSSLServer(t, "-tls1", "-cipher", "@SECLEVEL=0:ALL")
	protos := []string{"TLSv1", "TLSv1.1", "TLSv1.2"}
	p := mustPolicy(t, PolicyConfig{Protocols: protos}, nil)
	if !slices.ContainsFunc(p.Warnings(), func(w string) bool { return strings.Contains(w, "TLSv1 and TLSv1.1 cannot be negotiated") }) {
		t.Fatalf("no warning that the default suites cannot do TLSv1: %q", p.Warnings())
	}
	if _, err := dialOpenSSL(t, p, srv); err == nil {
		t.Fatal("TLSv1 handshake with the default (AEAD only) suites succeeded")
	}
	p = mustPolicy(t, PolicyConfig{Protocols: protos, Ciphers: "ECDHE+AES+SHA1"}, nil)
	cs, err := dialOpenSSL(t, p, srv)
	if err != nil {
		t.Fatal(err)
	}
	if cs.Version != tls.VersionTLS10 {
		t.Fatalf("negotiated %s", tls.VersionName(cs.Version))
	}
}

// openSSLServer is an `openssl s_server` on 127.0.0.1.
type openSSLServer struct {
	addr string
	cmd  *exec.Cmd
}

func startOpenSSLServer(t *testing.T, args ...string) *openSSLServer {
	t.Helper()
	testutil.NeedProgram(t, "openssl", "openssl")
	set := mustSet(t, pki.ECDSAP256, 0)
	f := pkiFiles(t, set)
	cmd := exec.Command("openssl", append([]string{"s_server", "-accept", "127.0.0.1:0", "-cert", f.ServerCert, "-key", f.ServerKey, "-www"}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	r := bufio.NewReader(out)
	deadline := time.AfterFunc(10*time.Second, func() { cmd.Process.Kill() })
	defer deadline.Stop()
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("s_server did not start: %v", err)
		}
		if a, ok := strings.CutPrefix(strings.TrimSpace(line), "ACCEPT "); ok {
			go io.Copy(io.Discard, r)
			return &openSSLServer{addr: a, cmd: cmd}
		}
	}
}

// dialOpenSSL handshakes with an s_server, writes a line so that TLS 1.3
// tickets (sent after the client's Finished) arrive, and closes.
func dialOpenSSL(t *testing.T, p *Policy, s *openSSLServer) (tls.ConnectionState, error) {
	t.Helper()
	target := Target{Addr: s.addr}
	cfg, err := p.ClientConfig(target, Vars{})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	c := tls.Client(raw, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = c.HandshakeContext(ctx)
	cs := c.ConnectionState()
	p.Observe(target, Vars{}, cs, err)
	if err != nil {
		return cs, err
	}
	// s_server -www answers a GET with a page; reading it takes in the
	// TLS 1.3 tickets sent before it.
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\n\r\n"); err != nil {
		return cs, err
	}
	io.Copy(io.Discard, c)
	return cs, nil
}
