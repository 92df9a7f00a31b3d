package conf

import "testing"

// TestParseIdentity: the identities proxy_ssl_verify_identity takes, and
// what it refuses.
func TestParseIdentity(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Identity
		err  bool
	}{
		{in: "uri:spiffe://example.org/ns/prod/sa/redis", want: Identity{Kind: "uri", Value: "spiffe://example.org/ns/prod/sa/redis"}},
		{in: "uri:spiffe://example.org/ns/prod/*", want: Identity{Kind: "uri", Value: "spiffe://example.org/ns/prod/", Prefix: true}},
		{in: "uri:spiffe://example.org/*", want: Identity{Kind: "uri", Value: "spiffe://example.org/", Prefix: true}},
		{in: "uri:https://svc.example.org/api", want: Identity{Kind: "uri", Value: "https://svc.example.org/api"}},
		{in: "dns:redis.internal", want: Identity{Kind: "dns", Value: "redis.internal"}},
		{in: "dns:*.example.org", want: Identity{Kind: "dns", Value: "*.example.org"}},
		{in: "cn:redis", want: Identity{Kind: "cn", Value: "redis"}},
		{in: "spiffe://example.org/x", err: true},
		{in: "uri:", err: true},
		{in: "uri:spiffe://example.org", err: true},
		{in: "uri:spiffe://example.org/", err: true},
		{in: "uri:spiffe://exa*mple.org/x", err: true},
		{in: "uri:relative/path", err: true},
		{in: "dns:bad name", err: true},
		{in: "dns:.example.org", err: true},
		{in: "ip:127.0.0.1", err: true},
	} {
		got, err := ParseIdentity(tc.in)
		if (err != nil) != tc.err || !tc.err && got != tc.want {
			t.Errorf("ParseIdentity(%q) = %+v, %v; want %+v, error %v", tc.in, got, err, tc.want, tc.err)
		}
		if err == nil && got.String() != tc.in {
			t.Errorf("ParseIdentity(%q).String() = %q", tc.in, got.String())
		}
	}
}

// FuzzParseIdentity: any input parses or is refused, never panics, and
// what parses prints back as written.
func FuzzParseIdentity(f *testing.F) {
	for _, s := range []string{"uri:spiffe://example.org/ns/prod/sa/redis", "uri:spiffe://example.org/*", "dns:*.example.org", "cn:x", "uri:%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseIdentity(s)
		if err == nil && id.String() != s {
			t.Errorf("ParseIdentity(%q).String() = %q", s, id.String())
		}
	})
}
