package tlsbridge

import (
	"strings"
	"testing"
)

// FuzzNameTemplate: proxy_ssl_name parsing never panics, a name without
// variables evaluates to itself, and variables evaluate to their values.
func FuzzNameTemplate(f *testing.F) {
	for _, s := range []string{"backend.example.com", "$remote_addr", "${server_addr}:$server_port", "a$", "${", "$nosuch"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tmpl, err := parseNameTemplate(s)
		if err != nil {
			return
		}
		v := Vars{RemoteAddr: "192.0.2.1", ServerAddr: "192.0.2.2", ServerPort: "443"}
		got := tmpl.eval(v)
		if !strings.Contains(s, "$") && got != s {
			t.Fatalf("%q evaluated to %q", s, got)
		}
		if tmpl.hasVars && strings.Contains(got, "$remote_addr") {
			t.Fatalf("%q left a variable in %q", s, got)
		}
	})
}

// FuzzPrivateKey: decrypting and parsing key material from a file never
// panics, whatever the bytes.
func FuzzPrivateKey(f *testing.F) {
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	f.Add([]byte("not DER"))
	f.Fuzz(func(t *testing.T, der []byte) {
		decryptPKCS8(der, []byte("password"))
		for _, typ := range []string{"PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"} {
			parsePrivateKey(typ, der)
		}
	})
}
