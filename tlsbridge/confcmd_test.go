package tlsbridge

import (
	"crypto/tls"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/pki"
)

func TestConfCommands(t *testing.T) {
	for _, tc := range []struct {
		cmds    []ConfCommand
		curves  []tls.CurveID
		min     uint16
		max     uint16
		ciphers string
		err     string
	}{
		{cmds: []ConfCommand{{"Groups", "X25519:P-256"}}, curves: []tls.CurveID{tls.X25519, tls.CurveP256}},
		{cmds: []ConfCommand{{"Curves", "prime256v1:secp384r1:P-521"}}, curves: []tls.CurveID{tls.CurveP256, tls.CurveP384, tls.CurveP521}},
		{cmds: []ConfCommand{{"groups", "X25519MLKEM768:x25519"}}, curves: []tls.CurveID{tls.X25519MLKEM768, tls.X25519}},
		{cmds: []ConfCommand{{"Groups", "?ffdhe2048:X25519"}}, curves: []tls.CurveID{tls.X25519}},
		{cmds: []ConfCommand{{"Groups", "ffdhe2048"}}, err: `group "ffdhe2048" is not implemented`},
		{cmds: []ConfCommand{{"MinProtocol", "TLSv1.3"}}, min: tls.VersionTLS13},
		{cmds: []ConfCommand{{"MaxProtocol", "TLSv1.2"}, {"MinProtocol", "TLSv1.2"}}, min: tls.VersionTLS12, max: tls.VersionTLS12},
		{cmds: []ConfCommand{{"MinProtocol", "SSLv3"}}, err: "SSLv3 is not supported"},
		{cmds: []ConfCommand{{"CipherString", "ECDHE+AESGCM"}}, ciphers: "ECDHE+AESGCM"},
		{cmds: []ConfCommand{{"Ciphersuites", "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"}}},
		{cmds: []ConfCommand{{"Ciphersuites", "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_CCM_SHA256"}}},
		{cmds: []ConfCommand{{"Ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"}}, err: "cannot leave out TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384"},
		{cmds: []ConfCommand{{"Ciphersuites", "TLS_FOO"}}, err: "unknown TLS 1.3 cipher suite"},
		{cmds: []ConfCommand{{"SignatureAlgorithms", "ECDSA+SHA256:RSA-PSS+SHA256"}}, err: "cannot leave out"},
		{cmds: []ConfCommand{{"SignatureAlgorithms", "RSA-PSS+SHA256:ECDSA+SHA256:ed25519:RSA-PSS+SHA384:RSA-PSS+SHA512:RSA+SHA256:RSA+SHA384:RSA+SHA512:ECDSA+SHA384:ECDSA+SHA512:RSA+SHA1"}}},
		{cmds: []ConfCommand{{"Options", "NoCompression,-SessionTicket"}}, err: `option "-SessionTicket" is not supported`},
		{cmds: []ConfCommand{{"Options", "NoRenegotiation, NoCompression"}}},
		{cmds: []ConfCommand{{"VerifyCAFile", "/x"}}, err: `proxy_ssl_conf_command "VerifyCAFile" is not supported`},
	} {
		r, err := applyConfCommands(tc.cmds, "DEFAULT")
		name := tc.cmds[0].Name + " " + tc.cmds[0].Value
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want %q", name, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !slices.Equal(r.curves, tc.curves) || r.minProto != tc.min || r.maxProto != tc.max {
			t.Errorf("%s: curves %v min %x max %x", name, r.curves, r.minProto, r.maxProto)
		}
		if tc.ciphers != "" && r.cipherString != tc.ciphers {
			t.Errorf("%s: cipher string %q", name, r.cipherString)
		}
	}
	// At the policy level an unknown command fails NewPolicy (tlsrelay -t).
	if _, err := NewPolicy(PolicyConfig{ConfCommands: []ConfCommand{{"Foo", "bar"}}}, nil); err == nil {
		t.Fatal("unknown conf command accepted")
	}
	p := mustPolicy(t, PolicyConfig{ConfCommands: []ConfCommand{{"MinProtocol", "TLSv1.3"}}}, nil)
	if p.minVer != tls.VersionTLS13 || p.suites != nil {
		t.Fatalf("MinProtocol TLSv1.3: %x, suites %v", p.minVer, p.suites)
	}
}

func TestGroupsAndALPNHandshake(t *testing.T) {
	set := mustSet(t, pki.ECDSAP256, 0)
	srv := startServer(t, serverWith(set, func(c *tls.Config) {
		c.CurvePreferences = []tls.CurveID{tls.CurveP384, tls.X25519MLKEM768}
		c.NextProtos = []string{"h2", "postgresql"}
	}))
	for _, tc := range []struct {
		groups string
		want   tls.CurveID
		reason Reason
	}{
		{"P-384", tls.CurveP384, ReasonNone},
		{"X25519MLKEM768", tls.X25519MLKEM768, ReasonNone},
		{"X25519:P-256", 0, ReasonCipher},
	} {
		p := mustPolicy(t, PolicyConfig{ConfCommands: []ConfCommand{{"Groups", tc.groups}}, ALPN: []string{"postgresql", ""}}, nil)
		cs, err := dialOnce(t, p, Target{Addr: srv.addr}, Vars{}, nil)
		if Classify(err) != tc.reason {
			t.Fatalf("%s: reason %s (%v)", tc.groups, Classify(err), err)
		}
		srv.next(t)
		if err != nil {
			continue
		}
		if cs.CurveID != tc.want || cs.NegotiatedProtocol != "postgresql" {
			t.Fatalf("%s: group %v, ALPN %q", tc.groups, cs.CurveID, cs.NegotiatedProtocol)
		}
		if !slices.ContainsFunc(p.Warnings(), func(w string) bool { return strings.Contains(w, "proxy_ssl_alpn") }) {
			t.Fatalf("no warning for the empty ALPN value: %q", p.Warnings())
		}
		f := FactsOf(cs, 3*time.Millisecond, nil)
		if f.VersionName() != "TLSv1.3" || f.ALPN != "postgresql" || !strings.Contains(f.PeerSubject, "CN=localhost") || f.Resumed {
			t.Fatalf("facts %+v", f)
		}
		if s := f.String(); !strings.HasPrefix(s, "TLSv1.3 TLS_") || !strings.Contains(s, " full 3ms ") {
			t.Fatalf("facts string %q", s)
		}
	}
	f := FactsOf(tls.ConnectionState{}, time.Second, &VerifyError{Reason: ReasonDepth, Detail: "x"})
	if f.Reason != ReasonDepth || f.VersionName() != "-" || f.CipherName() != "-" || !strings.HasPrefix(f.String(), "failed (depth)") {
		t.Fatalf("failure facts %+v %q", f, f.String())
	}
}
