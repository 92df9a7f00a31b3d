package conf

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// TestDirectiveTable: every row of the directive table says all that
// dispatch, -T and finish need, consistently.
func TestDirectiveTable(t *testing.T) {
	validName := regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	levelPos := map[posSlot]bool{posCore: true, posProxy: true, posSSL: true}
	ctxs := map[string]ctx{}
	aliases := map[string]bool{}
	for i, r := range directiveTable() {
		fail := func(format string, args ...any) {
			t.Helper()
			t.Errorf("row %d %q: "+format, append([]any{i, r.name}, args...)...)
		}
		if !validName.MatchString(r.name) {
			fail("not a directive name")
		}
		if r.ctx == 0 || r.ctx&^ctxAny != 0 {
			fail("contexts %b", r.ctx)
		}
		if ctxs[r.name]&r.ctx != 0 {
			fail("another row of the name has one of its contexts (dispatch would never reach this one)")
		}
		ctxs[r.name] |= r.ctx
		if r.min < 0 || r.max != noMax && r.max < r.min {
			fail("arguments %d..%d", r.min, r.max)
		}
		if (r.parse == nil) == (r.merge == nil) {
			fail("needs exactly one of parse and merge")
		}
		if r.pos == posUnset {
			fail("says nowhere where its position is kept")
		}
		if r.merge != nil {
			if r.ctx != ctxStreamServer {
				fail("a merge row is a stream and server directive")
			}
			if !levelPos[r.pos] && r.pos != posValue {
				fail("a merge row keeps its position in the level or in its value")
			}
		} else {
			if r.reset != nil || r.levelDefault != nil {
				fail("reset and levelDefault are for merge rows")
			}
			if levelPos[r.pos] {
				fail("only merge rows keep their position in a level")
			}
		}
		if r.reset != nil && !r.repeat {
			fail("reset is for repeatable directives")
		}
		if (r.mainDefault != nil || r.pos == posMain) && r.ctx.innermost() > ctxEvents {
			fail("mainDefault and posMain are for main and events directives")
		}
		if (r.format == nil) == (r.unprinted == "") {
			fail("needs a -T formatter or the reason -T leaves it out, not both")
		}
		if isSkipped(r.name) || isUnsupported(r.name) {
			fail("is also skipped or refused as unsupported")
		}
		for _, a := range r.aliases {
			if aliases[a] {
				t.Errorf("alias %q is in two rows", a)
			}
			aliases[a] = true
		}
	}
	for a := range aliases {
		if ctxs[a] != 0 {
			t.Errorf("alias %q is also a directive", a)
		}
	}
}

// TestDirectiveTableDocs: docs/configuration.md documents every directive
// of the table (each name and deprecated spelling starts a code span), and
// every directive in the first column of its directive tables is in the
// table.
func TestDirectiveTableDocs(t *testing.T) {
	// codeSpan matches a Markdown code span (which may wrap a line);
	// docWord is the directive name it starts with.
	codeSpan := regexp.MustCompile("`([^`]+)`")
	docWord := regexp.MustCompile(`^[a-z][a-z0-9_]*`)
	data, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	// Code blocks (```...```) are examples, not code spans: blanked,
	// keeping the line numbers.
	doc := regexp.MustCompile("(?ms)^```.*?^```$").ReplaceAllStringFunc(string(data), func(block string) string {
		return strings.Repeat("\n", strings.Count(block, "\n"))
	})
	documented := map[string]bool{}
	for _, m := range codeSpan.FindAllStringSubmatch(doc, -1) {
		documented[docWord.FindString(m[1])] = true
	}
	known := map[string]bool{}
	for _, r := range directiveTable() {
		for _, name := range append([]string{r.name}, r.aliases...) {
			known[name] = true
			if !documented[name] {
				t.Errorf("%q is in the directive table; docs/configuration.md does not document it", name)
			}
		}
	}
	inTable, checked := false, 0
	for i, line := range strings.Split(doc, "\n") {
		switch {
		case strings.HasPrefix(line, "| directive "):
			inTable = true
			continue
		case !strings.HasPrefix(line, "|"):
			inTable = false
			continue
		case !inTable || strings.HasPrefix(line, "|---"):
			continue
		}
		first, _, _ := strings.Cut(line[1:], " | ")
		for _, m := range codeSpan.FindAllStringSubmatch(first, -1) {
			word := docWord.FindString(m[1])
			if word == "" || strings.Contains(m[1], "=") {
				continue // a parameter (valid=time), not a directive
			}
			checked++
			if !known[word] {
				t.Errorf("docs/configuration.md:%d documents %q, which the directive table does not have", i+1, word)
			}
		}
	}
	if checked < 50 {
		t.Errorf("found %d directives in the directive tables of docs/configuration.md: has their form changed?", checked)
	}
}

// everyDirective is a configuration that uses every directive of the
// table (the events block is in the included file). Stream-level values
// are not set: -T prints them in each server, inherited, so they would not
// read back as stream-level ones.
const everyDirective = `worker_processes 2;
worker_cpu_affinity 01 10;
worker_rlimit_nofile 4096;
error_log stderr warn;
pid run/t.pid;
worker_shutdown_timeout 30s;
metrics_listen 127.0.0.1:9100;
api write=on allow=127.0.0.1/32,10.0.0.0/8;
daemon off;
include events.conf;
stream {
    log_format f escape=json "$remote_addr $status";
    limit_conn_zone $binary_remote_addr zone=addr:1m;
    variables_hash_max_size 1024;
    variables_hash_bucket_size 64;
    server_names_hash_max_size 512;
    server_names_hash_bucket_size 64;
    match m { send "PING\r\n\x01"; expect ~* "^pong"; }
    split_clients "${remote_addr}AAA" $bindip { 0.5% 127.0.0.2; 20% 127.0.0.3; * ""; }
    map $remote_addr$bindip $mapped { hostnames; default ""; 127.0.0.1 a; *.example.com b; ~^10\.(.*) $1; }
    map_hash_max_size 4096;
    map_hash_bucket_size 128;
    upstream b {
        hash $remote_addr consistent;
        zone b 64k;
        resolver 127.0.0.53 valid=10s ipv6=off;
        resolver_timeout 5s;
        server 127.0.0.1:1 weight=2 max_conns=10 max_fails=3 fail_timeout=5s;
        server 127.0.0.1:2 down;
    }
    upstream r { random two least_conn; server 127.0.0.1:3; }
    upstream l { least_conn; server 127.0.0.1:4 backup; server 127.0.0.1:5; }
    upstream t { least_time first_byte inflight; server 127.0.0.1:6; }
    upstream d { zone d 64k; resolver 127.0.0.53; server localhost:7 resolve; server example.com service=tls resolve; }
    server {
        listen 127.0.0.1:8000 backlog=100 reuseport so_keepalive=30:10:3 rcvbuf=64k sndbuf=32k fastopen=10 deferred default_server proxy_protocol;
        listen [::1]:8000 ipv6only=off;
        proxy_pass b;
        limit_conn addr 10;
        set_real_ip_from 10.0.0.0/8;
        allow 127.0.0.1;
        deny all;
        health_check interval=2s jitter=1s fails=2 passes=3 port=9000 match=m mandatory persistent;
        health_check_timeout 2s;
        tcp_nodelay off;
        resolver 127.0.0.53 ipv4=off;
        resolver_timeout 10s;
        preread_buffer_size 32k;
        preread_timeout 10s;
        proxy_protocol_timeout 10s;
        limit_conn_log_level warn;
        limit_conn_status 429;
        limit_conn_dry_run on;
        error_log stderr info;
        access_log access.log f buffer=8k gzip=5 flush=1s if=$status;
        proxy_connect_timeout 5s;
        proxy_timeout 1m;
        proxy_buffer_size 32k;
        proxy_next_upstream off;
        proxy_next_upstream_tries 3;
        proxy_next_upstream_timeout 10s;
        proxy_upload_rate 1m;
        proxy_download_rate 2m;
        proxy_protocol off;
        proxy_half_close on;
        proxy_socket_keepalive on;
        proxy_socket_rcvbuf 64k;
        proxy_socket_sndbuf 32k;
        proxy_bind 127.0.0.1 transparent;
        proxy_requests 1;
        proxy_responses 2;
        proxy_ssl on;
        proxy_ssl_certificate client.pem;
        proxy_ssl_certificate_key client.key;
        proxy_ssl_password_file password;
        proxy_ssl_protocols TLSv1.3;
        proxy_ssl_protocols TLSv1.2;
        proxy_ssl_ciphers ECDHE+AESGCM;
        proxy_ssl_name example.com;
        proxy_ssl_server_name on;
        proxy_ssl_verify on;
        proxy_ssl_verify_depth 2;
        proxy_ssl_trusted_certificate ca.pem;
        proxy_ssl_crl crl.pem;
        proxy_ssl_session_reuse off;
        proxy_ssl_conf_command Groups X25519;
        proxy_ssl_conf_command MinProtocol TLSv1.2;
        proxy_ssl_alpn h2 http/1.1;
        proxy_ssl_verify_identity uri:spiffe://example.org/ns/prod/sa/redis dns:redis.internal cn:redis;
        proxy_ssl_certificate_cache max=10 inactive=5s valid=30s;
        proxy_ssl_key_log keys.log;
        proxy_ssl_watch 5s;
        proxy_ssl_prewarm 2 max_idle=10s;
    }
    server { listen unix:/tmp/t.sock; proxy_pass d; proxy_protocol v2; proxy_bind off; access_log off;
        proxy_downstream_buffer 8k; }
    server { listen 8002; proxy_pass 127.0.0.1:9; proxy_upstream_buffer 4k; }
}
`

const everyDirectiveEvents = `events {
    worker_connections 1024;
    use epoll;
    accept_mutex_delay 500ms;
    debug_connection 127.0.0.1;
    worker_aio_requests 32;
    multi_accept on;
    accept_mutex off;
}
`

// TestFormatEveryDirective: the -T output of a configuration that uses
// every directive of the table reads back to the same Config, but for
// positions and for what -T leaves out on purpose.
func TestFormatEveryDirective(t *testing.T) {
	dir, _ := writePKI(t)
	if err := os.WriteFile(filepath.Join(dir, "events.conf"), []byte(everyDirectiveEvents), 0o600); err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	for name, src := range map[string]string{"t.conf": everyDirective, "events.conf": everyDirectiveEvents} {
		tree, err := parseTree(name, []byte(src), false)
		if err != nil {
			t.Fatal(err)
		}
		collectNames(tree, used)
	}
	for _, r := range directiveTable() {
		for _, name := range append([]string{r.name}, r.aliases...) {
			if !used[name] {
				t.Errorf("the configuration does not use %q", name)
			}
		}
	}

	name := filepath.Join(dir, "t.conf")
	cfg, _, err := Parse(name, []byte(everyDirective), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := cfg.Format()
	cfg2, _, err := Parse(name, []byte(out), LoadOptions{})
	if err != nil {
		t.Fatalf("re-reading -T output: %v\n%s", err, out)
	}
	if out2 := cfg2.Format(); out2 != out {
		t.Errorf("Format is not stable:\n%s\n---\n%s", out, out2)
	}
	for _, c := range []*Config{cfg, cfg2} {
		zeroPositions(reflect.ValueOf(c))
		// -T leaves proxy_requests and proxy_responses out (UDP only, no
		// effect on TCP).
		for _, srv := range c.Stream.Servers {
			srv.Proxy.Requests, srv.Proxy.Responses = 0, 0
		}
	}
	if !reflect.DeepEqual(cfg, cfg2) {
		a, _ := json.MarshalIndent(cfg, "", " ")
		b, _ := json.MarshalIndent(cfg2, "", " ")
		al, bl := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
		for i := 0; i < len(al) && i < len(bl); i++ {
			if al[i] != bl[i] {
				t.Fatalf("-T output reads back to another Config: line %d of their JSON: %s, after -T: %s\n%s",
					i+1, al[i], bl[i], out)
			}
		}
		t.Fatalf("-T output reads back to another Config (not in their JSON)\n%s", out)
	}
}

func collectNames(list []*directive, used map[string]bool) {
	for _, d := range list {
		used[d.name] = true
		collectNames(d.block, used)
	}
}

// zeroPositions clears every Pos and every map of positions under v.
func zeroPositions(v reflect.Value) {
	posType := reflect.TypeFor[Pos]()
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			zeroPositions(v.Elem())
		}
	case reflect.Struct:
		if v.Type() == posType {
			v.SetZero()
			return
		}
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				zeroPositions(v.Field(i))
			}
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			zeroPositions(v.Index(i))
		}
	case reflect.Map:
		if v.Type().Elem() == posType {
			v.SetZero()
			return
		}
		for _, k := range v.MapKeys() {
			zeroPositions(v.MapIndex(k))
		}
	}
}
