package bench

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tlsrelay/tlsrelay/internal/pki"
)

func testSpec(version uint16, reuse bool) ProxySpec {
	return ProxySpec{
		Listen: "127.0.0.1:4000", Upstreams: []string{"127.0.0.1:5001", "127.0.0.1:5002"},
		Workers: 2, Version: version, Reuse: reuse, Dir: "/tmp/x",
		Material: &Material{
			Key: pki.ECDSAP256, ClientCombined: "/m/client-combined.pem",
			Files: pki.Files{CA: "/m/ca.pem", ClientCert: "/m/client.pem", ClientKey: "/m/client.key"},
		},
	}
}

func TestTlsrelayConfig(t *testing.T) {
	cfg, err := TlsrelayConfig(testSpec(tls.VersionTLS13, true))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"worker_processes 2;",
		"server 127.0.0.1:5001;", "server 127.0.0.1:5002;",
		"listen 127.0.0.1:4000;", "proxy_pass backend;", "proxy_ssl on;",
		"proxy_ssl_certificate /m/client.pem;", "proxy_ssl_certificate_key /m/client.key;",
		"proxy_ssl_trusted_certificate /m/ca.pem;", "proxy_ssl_verify on;", "proxy_ssl_verify_depth 2;",
		"proxy_ssl_name localhost;", "proxy_ssl_protocols TLSv1.3;", "proxy_ssl_session_reuse on;",
		"proxy_ssl_conf_command Groups X25519:P-256;",
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
	if strings.Contains(cfg, "load_module") {
		t.Errorf("tlsrelay config has NGINX-only directives:\n%s", cfg)
	}
	// tlsrelay enforces worker_connections as NGINX does: both get the same.
	if !strings.Contains(cfg, "worker_connections 20000;") {
		t.Errorf("tlsrelay config lacks NGINX's worker_connections:\n%s", cfg)
	}
}

func TestNginxConfig(t *testing.T) {
	cfg, err := NginxConfig(testSpec(tls.VersionTLS12, false), "/mod/ngx_stream_module.so")
	if err != nil {
		t.Fatal(err)
	}
	stream, _ := renderStream(testSpec(tls.VersionTLS12, false))
	for _, want := range []string{
		"load_module /mod/ngx_stream_module.so;", "worker_processes 2;", "worker_rlimit_nofile 20000;",
		"daemon off;", "master_process on;", "pid /tmp/x/nginx.pid;", "error_log /tmp/x/error.log",
		"worker_connections 20000;", "proxy_ssl_protocols TLSv1.2;", "proxy_ssl_session_reuse off;",
		stream, // the very same stream block as tlsrelay's
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
	if strings.Index(cfg, "load_module") > strings.Index(cfg, "stream {") {
		t.Error("load_module must come before the stream block")
	}
}

func TestHAProxyConfig(t *testing.T) {
	on := HAProxyConfig(testSpec(tls.VersionTLS13, true))
	for _, want := range []string{
		"nbthread 2", "mode tcp", "bind 127.0.0.1:4000", "balance roundrobin",
		"server s1 127.0.0.1:5001 ssl crt /m/client-combined.pem ca-file /m/ca.pem verify required verifyhost localhost ssl-min-ver TLSv1.3 ssl-max-ver TLSv1.3\n",
		"server s2 127.0.0.1:5002 ssl",
	} {
		if !strings.Contains(on, want) {
			t.Errorf("config lacks %q:\n%s", want, on)
		}
	}
	if strings.Contains(on, "no-ssl-reuse") {
		t.Errorf("reuse on, but no-ssl-reuse:\n%s", on)
	}
	off := HAProxyConfig(testSpec(tls.VersionTLS12, false))
	if strings.Count(off, "no-ssl-reuse") != 2 || !strings.Contains(off, "ssl-max-ver TLSv1.2") {
		t.Errorf("reuse off, TLS 1.2:\n%s", off)
	}
}

func TestOrderAlternates(t *testing.T) {
	peers := []Peer{Tlsrelay{}, Nginx{}, HAProxy{}}
	names := func(ps []Peer) string {
		var s []string
		for _, p := range ps {
			s = append(s, p.Name())
		}
		return strings.Join(s, " ")
	}
	if got := names(order(peers, 0)); got != "tlsrelay NGINX HAProxy" {
		t.Errorf("round 0: %s", got)
	}
	if got := names(order(peers, 1)); got != "HAProxy NGINX tlsrelay" {
		t.Errorf("round 1: %s", got)
	}
	if got := names(peers); got != "tlsrelay NGINX HAProxy" {
		t.Errorf("order changed its argument: %s", got)
	}
}

func TestCryptoFloor(t *testing.T) {
	refs := []CryptoRef{
		{Name: OpX25519KeyGen, NsPerOp: 30e3}, {Name: OpX25519Shared, NsPerOp: 40e3},
		{Name: OpECDSASign, NsPerOp: 20e3}, {Name: OpECDSAVerify, NsPerOp: 60e3},
		{Name: OpRSASign, NsPerOp: 1000e3}, {Name: OpRSAVerify, NsPerOp: 30e3},
		{Name: OpAESGCMRecord, NsPerOp: 0.5e3},
	}
	for _, tt := range []struct {
		k    HandshakeKind
		want float64
	}{
		{HandshakeKind{Version: tls.VersionTLS13, Key: pki.ECDSAP256, Resumed: false}, 30 + 40 + 20 + 3*60},
		{HandshakeKind{Version: tls.VersionTLS12, Key: pki.RSA2048, Resumed: false}, 30 + 40 + 1000 + 3*30},
		{HandshakeKind{Version: tls.VersionTLS13, Key: pki.RSA2048, Resumed: true}, 70},
		{HandshakeKind{Version: tls.VersionTLS12, Key: pki.ECDSAP256, Resumed: true}, 2},
	} {
		if got := CryptoFloor(tt.k, refs).Micros; got != tt.want {
			t.Errorf("%s: floor %v, want %v", tt.k, got, tt.want)
		}
	}
	if got := CryptoFloor(HandshakeKind{Version: tls.VersionTLS13, Key: pki.ECDSAP256}, refs).CachedMicros; got != 30+40+20+60 {
		t.Errorf("cached-chain floor %v, want %v", got, 30+40+20+60)
	}
}

// TestStartRelativePath: a proxy given as a relative path ("bin/tlsrelay",
// as make bench passes it) starts although it runs in its own directory.
func TestStartRelativePath(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// A stand-in proxy: a shell script that listens with nothing; it only
	// has to start, so use one that exits at once and check the error is
	// about its exit, not about finding it.
	script := filepath.Join(dir, "fake-proxy")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho fake proxy ran\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(wd, script)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(rel, "/") {
		t.Fatalf("want a relative path with a directory, got %q", rel)
	}
	work := t.TempDir()
	addr, _ := FreePort()
	_, err = startProcess("fake", []string{rel}, filepath.Join(work, "fake.log"), addr, 0)
	if err == nil || !strings.Contains(err.Error(), "fake proxy ran") {
		t.Fatalf("got %v, want the fake proxy's exit with its output", err)
	}
}

// TestPlainConfigs: a plain spec gives every proxy the same block without
// any upstream TLS, and the plain kind and throughput rows say so.
func TestPlainConfigs(t *testing.T) {
	spec := testSpec(tls.VersionTLS13, true)
	spec.Plain = true
	spec.Prewarm = 2 // meaningless without TLS: not written either
	tr, err := TlsrelayConfig(spec)
	if err != nil {
		t.Fatal(err)
	}
	ng, err := NginxConfig(spec, "")
	if err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]string{"tlsrelay": tr, "NGINX": ng} {
		if strings.Contains(cfg, "proxy_ssl") || !strings.Contains(cfg, "proxy_pass backend;") || !strings.Contains(cfg, "server 127.0.0.1:5002;") {
			t.Errorf("%s plain config:\n%s", name, cfg)
		}
	}
	ha := HAProxyConfig(spec)
	if strings.Contains(ha, "ssl") || !strings.Contains(ha, "server s1 127.0.0.1:5001\n") {
		t.Errorf("HAProxy plain config:\n%s", ha)
	}
	if s := PlainKind.String(); s != "plain TCP (no proxy_ssl)" {
		t.Errorf("plain kind is %q", s)
	}
	if k := AllKinds(); k[len(k)-1] != PlainKind || len(k) != len(HandshakeKinds())+1 {
		t.Errorf("AllKinds = %v", k)
	}
	if s := (ThroughputRow{Plain: true}).suffix(); s != ", plain TCP" {
		t.Errorf("plain throughput row suffix %q", s)
	}
}
