package tlsbridge

import (
	"crypto/tls"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// cipherStrings are the strings the differential test feeds to both
// ParseCipherString and `openssl ciphers`.
var cipherStrings = []string{
	// defaults and the nginx-stream.md §5.1 keyword table
	"DEFAULT", "HIGH:!aNULL:!MD5", "@SECLEVEL=2:HIGH", "ALL", "ALL:COMPLEMENTOFALL", "COMPLEMENTOFDEFAULT",
	"COMPLEMENTOFALL", "ECDHE", "kECDHE", "aECDSA", "aRSA", "kRSA", "RSA", "AESGCM", "CHACHA20", "AES128",
	"AES256", "SHA1", "SHA256", "SHA384", "CBC", "TLSv1.2", "TLSv1", "TLSv1.0", "SSLv3", "MEDIUM", "LOW", "3DES", "RC4",
	"ECDHE+AESGCM", "EECDH+AESGCM:EDH+AESGCM", "ECDHE+AESGCM:EDH+AESGCM",
	// tlsrelay's default, and what docs/tls.md suggests for TLSv1/TLSv1.1
	DefaultCiphers, "ECDHE+AESGCM:ECDHE+CHACHA20:ECDHE+AES+SHA1", "ECDHE+AES+SHA1",
	// operators and ordering
	"ALL:@STRENGTH", "DEFAULT:@STRENGTH", "kRSA:+AES256", "ALL:-ECDHE:ECDHE+AES128", "ALL:!ECDHE:ECDHE",
	"ECDHE:+SHA1", "ECDHE:+aRSA:+SHA", "AES128-SHA:AES256-SHA:ECDHE-RSA-AES128-GCM-SHA256", "HIGH:-AES256:AES256",
	"DEFAULT:!kRSA", "DEFAULT:-RSA:RSA", "HIGH:!RSA:!SHA1", "DEFAULT:+AESGCM", "ALL:+CHACHA20:@STRENGTH",
	"ECDHE-ECDSA-AES128-GCM-SHA256,ECDHE-RSA-AES128-GCM-SHA256", "AES128-GCM-SHA256 AES256-GCM-SHA384",
	"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256:TLS_RSA_WITH_AES_128_CBC_SHA", "HIGH+FIPS", "FIPS", "ALL+HIGH", "kECDHE+aECDSA+AES256",
	"ECDHE+kRSA", "NOSUCH:ECDHE-RSA-AES256-SHA", "DEFAULT:ECDHE-RSA-CHACHA20-POLY1305", "!ALL:ECDHE-RSA-AES128-SHA",
	// security levels
	"@SECLEVEL=0:ALL", "@SECLEVEL=0:ALL:COMPLEMENTOFALL", "@SECLEVEL=3:ALL", "@SECLEVEL=4:ALL", "@SECLEVEL=5:ALL",
	"DEFAULT:@SECLEVEL=3", "HIGH:@SECLEVEL=4",
	// Suite B
	"SUITEB128", "SUITEB128ONLY", "SUITEB128C2", "SUITEB192",
	// odd syntax
	"DEFAULT::HIGH", ":ALL", "ALL;!SHA1", "DEFAULT,!kRSA", "PSK", "SRP", "aNULL", "eNULL:NULL", "ADH:AECDH",
	// failures: no match, invalid commands
	"NOSUCH", "!ALL", "@FOO", "@SECLEVEL=9", "HIGH:#", "ECDHE+", "ALL:-", "eNULL:!eNULL",
}

type opensslList struct {
	names []string
	ids   []uint16
	err   bool
}

func opensslCiphers(t *testing.T, args ...string) opensslList {
	t.Helper()
	out, err := exec.Command("openssl", append([]string{"ciphers", "-V"}, args...)...).Output()
	if err != nil {
		return opensslList{err: true}
	}
	var l opensslList
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[3] == "TLSv1.3" || strings.HasPrefix(f[2], "TLS_") {
			continue
		}
		p := strings.Split(f[0], ",")
		hi, _ := strconv.ParseUint(strings.TrimPrefix(p[0], "0x"), 16, 8)
		lo, _ := strconv.ParseUint(strings.TrimPrefix(p[1], "0x"), 16, 8)
		l.names = append(l.names, f[2])
		l.ids = append(l.ids, uint16(hi<<8|lo))
	}
	return l
}

// TestCipherStringsDifferential compares ParseCipherString with the
// installed OpenSSL: the whole list (`openssl ciphers`), the offered list
// (`openssl ciphers -s`) and, restricted to crypto/tls's suites, the list a
// tls.Config gets, in order.
func TestCipherStringsDifferential(t *testing.T) {
	testutil.NeedProgram(t, "openssl", "openssl")
	goSuites := goSuiteSet()
	compared, withGo := 0, 0
	for _, s := range cipherStrings {
		full := opensslCiphers(t, s)
		offered := opensslCiphers(t, "-s", s)
		cl, err := ParseCipherString(s)
		if full.err {
			if err == nil {
				t.Errorf("%q: openssl fails, we accept: %v", s, cl.OpenSSL)
			}
			compared++
			continue
		}
		if err != nil {
			t.Errorf("%q: openssl accepts, we fail: %v", s, err)
			continue
		}
		if got, want := strings.Join(cl.OpenSSL, ":"), strings.Join(full.names, ":"); got != want {
			t.Errorf("%q: whole list differs\n got %s\nwant %s", s, got, want)
		}
		if got, want := strings.Join(cl.Offered, ":"), strings.Join(offered.names, ":"); got != want {
			t.Errorf("%q: offered list (-s) differs\n got %s\nwant %s", s, got, want)
		}
		var want []uint16
		for _, id := range offered.ids {
			if goSuites[id] {
				want = append(want, id)
			}
		}
		if len(want) > 0 {
			withGo++
		}
		if !equalIDs(cl.Go, want) {
			t.Errorf("%q: Go list differs\n got %s\nwant %s", s, suiteNames(cl.Go), suiteNames(want))
		}
		compared++
	}
	t.Logf("%d cipher strings compared with %s (%d select suites crypto/tls implements)", compared, opensslVersion(), withGo)
	if compared < 40 {
		t.Fatalf("only %d strings compared", compared)
	}
}

func opensslVersion() string {
	out, _ := exec.Command("openssl", "version").Output()
	return strings.TrimSpace(string(out))
}

func equalIDs(a, b []uint16) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func suiteNames(ids []uint16) string {
	var n []string
	for _, id := range ids {
		n = append(n, tls.CipherSuiteName(id))
	}
	return strings.Join(n, ":")
}

// TestCipherStringKnownLists pins a few results without openssl, from
// nginx-stream.md §5.1.
func TestCipherStringKnownLists(t *testing.T) {
	for _, tc := range []struct {
		s    string
		want []uint16
	}{
		{"ECDHE+AESGCM", []uint16{0xc02c, 0xc030, 0xc02b, 0xc02f}},
		{"kRSA", []uint16{0x009d, 0x009c, 0x003c, 0x0035, 0x002f}},
		{"CHACHA20", []uint16{0xcca9, 0xcca8}},
		{"DHE-RSA-AES128-GCM-SHA256", nil},
	} {
		cl, err := ParseCipherString(tc.s)
		if err != nil {
			t.Fatalf("%q: %v", tc.s, err)
		}
		if !equalIDs(cl.Go, tc.want) {
			t.Errorf("%q: got %s, want %s", tc.s, suiteNames(cl.Go), suiteNames(tc.want))
		}
	}
	cl, err := ParseCipherString("DEFAULT")
	if err != nil {
		t.Fatal(err)
	}
	if len(cl.Go) != 17 {
		t.Errorf("DEFAULT: %d Go suites, want the 17 of nginx-stream.md §5.1: %s", len(cl.Go), suiteNames(cl.Go))
	}
	if len(cl.Go)+len(cl.Missing) != 27 {
		t.Errorf("DEFAULT offers %d suites, want the 27 NGINX sends (§5.1)", len(cl.Go)+len(cl.Missing))
	}
	if _, err := ParseCipherString("NOSUCH"); err == nil {
		t.Error("NOSUCH: want no cipher match")
	}
}

func FuzzCipherString(f *testing.F) {
	for _, s := range cipherStrings {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cl, err := ParseCipherString(s)
		if err == nil && len(cl.OpenSSL) == 0 {
			t.Fatalf("%q: accepted with an empty list", s)
		}
		if len(cl.Go)+len(cl.Missing) != len(cl.Offered) {
			t.Fatalf("%q: Go+Missing != Offered", s)
		}
	})
}

// TestCipherStringsRandomDifferential feeds random strings built from the
// grammar's pieces to both implementations.
func TestCipherStringsRandomDifferential(t *testing.T) {
	testutil.NeedProgram(t, "openssl", "openssl")
	items := []string{"ALL", "DEFAULT", "HIGH", "MEDIUM", "ECDHE", "EECDH", "EDH", "DHE", "kRSA", "RSA", "aRSA", "aECDSA",
		"AESGCM", "AES128", "AES256", "AES", "CHACHA20", "SHA1", "SHA", "SHA256", "SHA384", "CBC", "TLSv1.2", "TLSv1", "SSLv3",
		"aNULL", "eNULL", "NULL", "PSK", "CAMELLIA", "ARIA", "AESCCM", "COMPLEMENTOFDEFAULT", "FIPS", "@STRENGTH",
		"ECDHE-RSA-AES128-GCM-SHA256", "AES128-SHA", "ECDHE-ECDSA-AES256-SHA", "AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305",
		"ECDHE-RSA-AES128-SHA256", "NOPE"}
	prefixes := []string{"", "", "", "!", "-", "+"}
	seps := []string{":", ":", ",", " "}
	rnd := uint64(0x9e3779b97f4a7c15)
	next := func(n int) int {
		rnd ^= rnd << 13
		rnd ^= rnd >> 7
		rnd ^= rnd << 17
		return int(rnd % uint64(n))
	}
	n := 300
	if testing.Short() {
		n = 30
	}
	bad := 0
	for i := 0; i < n; i++ {
		var b strings.Builder
		for k, parts := 0, 1+next(5); k < parts; k++ {
			if k > 0 {
				b.WriteString(seps[next(len(seps))])
			}
			b.WriteString(prefixes[next(len(prefixes))])
			b.WriteString(items[next(len(items))])
			if next(4) == 0 {
				b.WriteString("+" + items[next(len(items))])
			}
		}
		s := b.String()
		arg := s
		if strings.HasPrefix(s, "-") {
			arg = ":" + s // or the openssl command takes it for an option
		}
		full := opensslCiphers(t, arg)
		cl, err := ParseCipherString(s)
		if full.err != (err != nil) {
			t.Errorf("%q: openssl error=%v, ours=%v", s, full.err, err)
			bad++
			continue
		}
		if err == nil && strings.Join(cl.OpenSSL, ":") != strings.Join(full.names, ":") {
			t.Errorf("%q: lists differ\n got %s\nwant %s", s, strings.Join(cl.OpenSSL, ":"), strings.Join(full.names, ":"))
			bad++
		}
	}
	t.Logf("%d random cipher strings compared, %d differ", n, bad)
}
