package tlsbridge

import (
	"crypto/tls"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/internal/pki"
)

// defaultSuiteIDs are the suites DefaultCiphers must select: ECDHE with
// AEAD ciphers only, for ECDSA and RSA certificates.
var defaultSuiteIDs = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

func TestDefaultCiphersMatchConf(t *testing.T) {
	if DefaultCiphers != conf.DefaultProxySSLCiphers {
		t.Fatalf("tlsbridge.DefaultCiphers %q != conf.DefaultProxySSLCiphers %q", DefaultCiphers, conf.DefaultProxySSLCiphers)
	}
	cl, err := ParseCipherString(DefaultCiphers)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cl.Go, defaultSuiteIDs) || len(cl.Missing) != 0 || len(cl.OpenSSL) != len(defaultSuiteIDs) {
		t.Fatalf("DefaultCiphers selects Go %s, missing %v, OpenSSL %v", suiteNames(cl.Go), cl.Missing, cl.OpenSSL)
	}
}

// TestCipherWarnings: the warnings about the cipher string appear only
// for a string the user wrote, and name the directive that set it.
func TestCipherWarnings(t *testing.T) {
	high, err := ParseCipherString("HIGH:!aNULL:!MD5")
	if err != nil {
		t.Fatal(err)
	}
	if len(high.Missing) == 0 || len(insecureNames(high.Go)) == 0 {
		t.Fatalf("HIGH:!aNULL:!MD5 should select missing and insecure suites: %v, %v", high.Missing, insecureNames(high.Go))
	}
	missingHigh := fmt.Sprintf("proxy_ssl_ciphers selects %d suites crypto/tls does not implement, which are not offered (%s); `tlsrelay -T` lists them",
		len(high.Missing), SummarizeSuites(high.Missing))
	insecureHigh := "proxy_ssl_ciphers enables suites crypto/tls lists as insecure: " + strings.Join(insecureNames(high.Go), ":")
	const oldProtos = `proxy_ssl_protocols enables TLSv1 TLSv1.1, but the cipher string "` + DefaultCiphers +
		`" selects only TLS 1.2 suites, so TLSv1 and TLSv1.1 cannot be negotiated (add e.g. ECDHE+AES+SHA1 to proxy_ssl_ciphers)`
	for _, tc := range []struct {
		name string
		pc   PolicyConfig
		want []string // the warnings besides the TLSv1/TLSv1.1 deprecation ones
	}{
		{"unset", PolicyConfig{}, nil},
		{"default written out", PolicyConfig{Ciphers: DefaultCiphers}, nil},
		{"conf's default", PolicyConfig{Ciphers: conf.DefaultProxySSLCiphers}, nil},
		{"HIGH", PolicyConfig{Ciphers: "HIGH:!aNULL:!MD5"}, []string{missingHigh, insecureHigh}},
		{"HIGH, TLS 1.3 only", PolicyConfig{Ciphers: "HIGH:!aNULL:!MD5", Protocols: []string{"TLSv1.3"}}, []string{missingHigh}},
		{"conf command", PolicyConfig{ConfCommands: []ConfCommand{{"CipherString", "HIGH:!aNULL:!MD5"}}},
			[]string{"proxy_ssl_conf_command CipherString" + missingHigh[len("proxy_ssl_ciphers"):],
				"proxy_ssl_conf_command CipherString" + insecureHigh[len("proxy_ssl_ciphers"):]}},
		{"AEAD with TLSv1", PolicyConfig{Protocols: []string{"TLSv1", "TLSv1.1", "TLSv1.2"}}, []string{oldProtos}},
		{"SHA1 with TLSv1", PolicyConfig{Protocols: []string{"TLSv1", "TLSv1.1", "TLSv1.2"}, Ciphers: "ECDHE+AES+SHA1"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.pc.Verify, tc.pc.TrustedCertificate, tc.pc.VerifyDepth = true, caFile(t), 1
			p := mustPolicy(t, tc.pc, nil)
			var got []string
			for _, w := range p.Warnings() {
				if !slices.Contains([]string{"TLSv1 is enabled: it is deprecated (RFC 8996)", "TLSv1.1 is enabled: it is deprecated (RFC 8996)"}, w) {
					got = append(got, w)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("warnings\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

// TestDefaultCiphersOffered checks what a ClientHello built from the
// default policy offers, as a Go server sees it.
func TestDefaultCiphersOffered(t *testing.T) {
	set := mustSet(t, pki.ECDSAP256, 0)
	for _, tc := range []struct {
		name   string
		protos []string
		tls13  bool
	}{
		{"default protocols", nil, true},
		{"TLSv1.2 only", []string{"TLSv1.2"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hellos := make(chan []uint16, 1)
			srv := startServer(t, serverWith(set, func(c *tls.Config) {
				c.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
					hellos <- slices.Clone(hello.CipherSuites)
					return nil, nil
				}
			}))
			p := mustPolicy(t, PolicyConfig{Protocols: tc.protos}, nil)
			if _, err := dialOnce(t, p, Target{Addr: srv.addr, Host: "localhost"}, Vars{}, nil); err != nil {
				t.Fatal(err)
			}
			offered := <-hellos
			var tls12, tls13 []uint16
			for _, id := range offered {
				if id>>8 == 0x13 {
					tls13 = append(tls13, id)
				} else {
					tls12 = append(tls12, id)
				}
			}
			// crypto/tls orders the ClientHello by its own preference.
			slices.Sort(tls12)
			want := slices.Sorted(slices.Values(defaultSuiteIDs))
			if !slices.Equal(tls12, want) {
				t.Fatalf("TLS 1.2 suites offered %s, want %s", suiteNames(tls12), suiteNames(want))
			}
			if (len(tls13) > 0) != tc.tls13 {
				t.Fatalf("TLS 1.3 suites offered: %s", suiteNames(tls13))
			}
		})
	}
}

// caFile returns the path of a CA certificate file, for policies that
// must have verification on (so that its warning stays out of the way).
func caFile(t *testing.T) string {
	t.Helper()
	return pkiFiles(t, mustSet(t, pki.ECDSAP256, 0)).CA
}
