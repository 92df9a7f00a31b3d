package tlsbridge

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os/exec"
	"strings"
	"testing"

	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

func TestNamesAndSNI(t *testing.T) {
	root, _ := pki.NewRoot("names root", pki.Options{})
	leaf, err := pki.NewLeaf("backends", root, pki.Options{
		DNSNames: []string{"backend1.example.com", "backend-7.example.com", "localhost"},
		IPs:      []net.IP{net.ParseIP("127.0.0.1")},
		Usage:    []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		t.Fatal(err)
	}
	ca := writeFile(t, "ca.pem", root.CertPEM())
	srv := startServer(t, &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.DER}, PrivateKey: leaf.Key}}})
	for _, tc := range []struct {
		name    string
		pc      PolicyConfig
		target  Target
		vars    Vars
		wantSNI string
		reason  Reason
	}{
		{"per-target host, SNI off", PolicyConfig{}, Target{Host: "backend1.example.com"}, Vars{}, "", ReasonNone},
		{"per-target host, SNI on", PolicyConfig{ServerName: true}, Target{Host: "backend1.example.com"}, Vars{}, "backend1.example.com", ReasonNone},
		{"host not in certificate", PolicyConfig{ServerName: true}, Target{Host: "backend"}, Vars{}, "backend", ReasonNameMismatch},
		{"IP target: IP SAN, no SNI", PolicyConfig{ServerName: true}, Target{Host: "127.0.0.1"}, Vars{}, "", ReasonNone},
		{"no host: the address", PolicyConfig{ServerName: true}, Target{}, Vars{}, "", ReasonNone},
		{"proxy_ssl_name literal", PolicyConfig{Name: "backend1.example.com", ServerName: true}, Target{Host: "backend"}, Vars{}, "backend1.example.com", ReasonNone},
		{"proxy_ssl_name with port", PolicyConfig{Name: "localhost:8443", ServerName: true}, Target{Host: "backend"}, Vars{}, "localhost", ReasonNone},
		{"proxy_ssl_name with variables", PolicyConfig{Name: "backend-${server_port}.example.com", ServerName: true}, Target{Host: "x"}, Vars{ServerPort: "7"}, "backend-7.example.com", ReasonNone},
		{"proxy_ssl_name variables, mismatch", PolicyConfig{Name: "backend-$server_port.example.com", ServerName: true}, Target{Host: "x"}, Vars{ServerPort: "8"}, "backend-8.example.com", ReasonNameMismatch},
		{"proxy_ssl_name $server_addr (IP)", PolicyConfig{Name: "$server_addr", ServerName: true}, Target{Host: "x"}, Vars{ServerAddr: "127.0.0.1"}, "", ReasonNone},
		{"proxy_ssl_name $remote_addr (IP, mismatch)", PolicyConfig{Name: "$remote_addr", ServerName: true}, Target{Host: "x"}, Vars{RemoteAddr: "10.1.2.3"}, "", ReasonNameMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.pc.Verify, tc.pc.VerifyDepth, tc.pc.TrustedCertificate = true, 1, ca
			p := mustPolicy(t, tc.pc, nil)
			tc.target.Addr = srv.addr
			_, err := dialOnce(t, p, tc.target, tc.vars, nil)
			if Classify(err) != tc.reason {
				t.Fatalf("reason %s (%v), want %s", Classify(err), err, tc.reason)
			}
			sc := srv.next(t)
			if sc.state.ServerName != tc.wantSNI {
				t.Fatalf("server saw SNI %q, want %q", sc.state.ServerName, tc.wantSNI)
			}
		})
	}
	if _, err := NewPolicy(PolicyConfig{Name: "$host"}, nil); err == nil || !strings.Contains(err.Error(), `unknown "host" variable`) {
		t.Fatalf("unknown variable: %v", err)
	}
}

func TestNameTemplate(t *testing.T) {
	v := Vars{RemoteAddr: "10.0.0.1", ServerAddr: "10.0.0.2", ServerPort: "443"}
	for in, want := range map[string]string{
		"":                                "",
		"plain.example.com":               "plain.example.com",
		"$remote_addr":                    "10.0.0.1",
		"a-${server_addr}-b":              "a-10.0.0.2-b",
		"$server_addr:$server_port":       "10.0.0.2:443",
		"x.$server_port.$remote_addr.end": "x.443.10.0.0.1.end",
		"${SERVER_ADDR}":                  "10.0.0.2",
	} {
		nt, err := parseNameTemplate(in)
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if got := nt.eval(v); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
	for _, bad := range []string{"$", "${remote_addr", "$nope", "${}", "$remote_port", "$1"} {
		if _, err := parseNameTemplate(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestClientConfigCached(t *testing.T) {
	p := mustPolicy(t, PolicyConfig{SessionReuse: true}, NewSessionStore(SessionStoreOptions{}))
	target := Target{Addr: "127.0.0.1:1", Host: "a.example"}
	c1, _ := p.ClientConfig(target, Vars{})
	c2, _ := p.ClientConfig(target, Vars{RemoteAddr: "1.2.3.4"})
	if c1 != c2 {
		t.Fatal("config not cached for a name without variables")
	}
	if n := testing.AllocsPerRun(100, func() { p.ClientConfig(target, Vars{}) }); n != 0 {
		t.Fatalf("ClientConfig allocates %v times per call", n)
	}
	c3, _ := p.ConfigWithoutResumption(target, Vars{})
	if c3.ClientSessionCache != nil || c1.ClientSessionCache == nil {
		t.Fatal("session caches wrong")
	}
}

// TestNameMatchingDifferential compares our name check with OpenSSL's
// X509_check_host / X509_check_ip (`openssl x509 -checkhost/-checkip`) on
// wildcard and IP cases. The one known difference, OpenSSL's fallback to
// the subject CN when a certificate has no DNS SAN, is left out: we do not
// fall back (docs/tls.md).
func TestNameMatchingDifferential(t *testing.T) {
	testutil.NeedProgram(t, "openssl", "openssl")
	root, _ := pki.NewRoot("root", pki.Options{})
	leaf, err := pki.NewLeaf("cn.example.net", root, pki.Options{
		DNSNames: []string{"*.example.com", "exact.example.org", "*.sub.example.net", "xn--bcher-kva.example"},
		IPs:      []net.IP{net.ParseIP("10.0.0.7"), net.ParseIP("2001:db8::1")},
	})
	if err != nil {
		t.Fatal(err)
	}
	file := writeFile(t, "leaf.pem", leaf.CertPEM())
	names := []string{"a.example.com", "A.EXAMPLE.COM", "example.com", "a.b.example.com", "exact.example.org",
		"other.example.org", "x.sub.example.net", "sub.example.net", "xn--bcher-kva.example", "cn.example.net",
		"10.0.0.7", "10.0.0.8", "2001:db8::1", "2001:db8:0:0:0:0:0:1", "2001:db8::2"}
	for _, n := range names {
		flag := "-checkhost"
		if net.ParseIP(n) != nil {
			flag = "-checkip"
		}
		out, err := exec.Command("openssl", "x509", "-in", file, "-noout", flag, n).CombinedOutput()
		if err != nil {
			t.Fatalf("openssl: %v %s", err, out)
		}
		want := !strings.Contains(string(out), "NOT match")
		got := checkName(leaf.Cert, n) == nil
		if got != want {
			t.Errorf("%q: ours match=%v, openssl match=%v", n, got, want)
		}
	}
	t.Logf("%d names agree with OpenSSL's X509_check_host/X509_check_ip", len(names))
}
