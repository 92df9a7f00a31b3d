package conf

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// The stream module as Debian packages it (libnginx-mod-stream).
const nginxStreamModule = "/usr/lib/nginx/modules/ngx_stream_module.so"

// nginxDiffCases are configurations that NGINX 1.22 and tlsrelay must both
// accept or both refuse. sameMsg marks the cases where the message (text,
// file and line) must be the same too. Directives only newer NGINX or only
// tlsrelay know are left out.
var nginxDiffCases = []struct {
	name    string
	src     string
	ok      bool
	sameMsg bool
}{
	{"empty stream", "stream {}", true, false},
	{"minimal", "stream { server { listen 12345; proxy_pass 127.0.0.1:9443; } }", true, false},
	{"guide example, local", `stream {
    upstream backend {
        server 127.0.0.1:12346;
        server localhost:12347;
        server 127.0.0.1:12348;
   }
    server {
        listen     12345;
        proxy_pass backend;
        proxy_ssl  on;
        proxy_ssl_certificate         client.pem;
        proxy_ssl_certificate_key     client.key;
        proxy_ssl_protocols           TLSv1 TLSv1.1 TLSv1.2;
        proxy_ssl_ciphers             HIGH:!aNULL:!MD5;
        proxy_ssl_trusted_certificate ca.pem;
        proxy_ssl_verify        on;
        proxy_ssl_verify_depth  2;
        proxy_ssl_session_reuse on;
    }
}`, true, false},
	{"unknown directive", "stream {\n server { listen 1; proxy_pass 127.0.0.1:2;\n proxy_ssl_verfiy on; } }", false, true},
	{"unknown main directive", "foo bar;", false, true},
	{"wrong arg count", "stream { server { listen 1; proxy_pass 127.0.0.1:2; proxy_ssl; } }", false, true},
	{"too many args", "stream { server { listen 1; proxy_pass 127.0.0.1:2; proxy_timeout 1s 2s; } }", false, true},
	{"bad time", "stream { server { listen 1; proxy_pass 127.0.0.1:2; proxy_timeout 10x; } }", false, true},
	{"ms in seconds", "stream { upstream b { server 127.0.0.1:1 fail_timeout=10ms; } }", false, true},
	{"combined time", "stream { server { listen 1; proxy_pass 127.0.0.1:2; proxy_timeout 1h30m; proxy_connect_timeout 1m30; } }", true, false},
	{"month in msec", "stream { server { listen 1; proxy_pass 127.0.0.1:2; proxy_timeout 1M; } }", false, true},
	{"bad size", "stream { server { listen 1; proxy_pass 127.0.0.1:2; proxy_buffer_size 16kb; } }", false, true},
	{"size units", "stream { server { listen 1; proxy_pass 127.0.0.1:2; proxy_buffer_size 1M; proxy_upload_rate 10k; } }", true, false},
	{"bad flag", "stream { server { listen 1; proxy_pass 127.0.0.1:2; proxy_ssl yes; } }", false, true},
	{"flag case", "stream { server { listen 1; proxy_pass 127.0.0.1:2; proxy_ssl_server_name ON; } }", true, false},
	{"bad number", "stream { server { listen 1; proxy_pass 127.0.0.1:2; proxy_next_upstream_tries -1; } }", false, true},
	{"duplicate", "stream { server { listen 1; proxy_pass 127.0.0.1:2; proxy_timeout 1s; proxy_timeout 1s; } }", false, true},
	{"duplicate proxy_pass", "stream { server { listen 1; proxy_pass 127.0.0.1:2; proxy_pass 127.0.0.1:3; } }", false, true},
	{"duplicate protocols merge", "stream { server { listen 1; proxy_pass 127.0.0.1:2; proxy_ssl_protocols TLSv1.2; proxy_ssl_protocols TLSv1.3; } }", true, false},
	{"bad protocol", "stream { server { listen 1; proxy_pass 127.0.0.1:2; proxy_ssl_protocols TLSv1.4; } }", false, false},
	{"wrong context proxy_pass", "stream { proxy_pass 127.0.0.1:2; }", false, true},
	{"wrong context listen", "stream { listen 1; }", false, true},
	{"wrong context main", "stream { worker_processes 2; }", false, true},
	{"stream proxy settings", "stream { proxy_ssl on; proxy_timeout 1m; proxy_ssl_conf_command Options -SessionTicket;\n" +
		"server { listen 1; proxy_pass 127.0.0.1:2; proxy_ssl_conf_command Groups X25519; } }", true, false},
	{"unexpected close", "stream {}\n}", false, true},
	{"unexpected eof", "stream {\n server {", false, true},
	{"eof in directive", "stream { server { listen 1", false, true},
	{"unexpected semicolon", "stream { ; }", false, true},
	{"quote needs space", `stream { log_format f "a"b; }`, false, true},
	{"quotes and escapes", `stream { log_format f "a \"b\"" '$remote_addr\t'; }`, true, false},
	{"upstream server without port", "stream { upstream b { server 127.0.0.1; } }", false, true},
	{"upstream server bad port", "stream { upstream b { server 127.0.0.1:70000; } }", false, true},
	{"upstream unix", "stream { upstream b { server unix:/tmp/x.sock; } server { listen 1; proxy_pass b; } }", true, false},
	{"proxy_pass unknown upstream without port", "stream { server { listen 1;\n proxy_pass backend; } }", false, true},
	{"proxy_pass upstream defined later", "stream { server { listen 1; proxy_pass b; } upstream b { server 127.0.0.1:1; } }", true, false},
	{"proxy_pass upstream with port", "stream { upstream b { server 127.0.0.1:1; } server { listen 1; proxy_pass b:80; } }", false, true},
	{"proxy_pass upstream case", "stream { upstream Back { server 127.0.0.1:1; } server { listen 1; proxy_pass back; } }", true, false},
	{"proxy_pass variables", "stream { server { listen 1; proxy_pass $remote_addr:80; } }", true, false},
	{"no listen", "stream { server { proxy_pass 127.0.0.1:2; } }", false, true},
	{"no proxy_pass", "stream { server { listen 1; } }", false, true},
	// Multi-line: NGINX names the line of "server {" / "upstream {".
	{"no proxy_pass, lines", "stream {\n server {\n  listen 1;\n\n }\n}", false, true},
	{"no listen, lines", "stream {\n server {\n  proxy_pass 127.0.0.1:2;\n\n }\n}", false, true},
	{"empty upstream, lines", "stream {\n upstream b {\n\n }\n}", false, true},
	{"only backup before hash, lines", "stream {\n upstream b {\n  server 127.0.0.1:2 backup;\n  hash $remote_addr;\n\n }\n}", false, true},
	{"duplicate listen", "stream { server { listen 1; proxy_pass 127.0.0.1:2; } server { listen *:1; proxy_pass 127.0.0.1:2; } }", false, true},
	{"listen params", "stream { server { listen 127.0.0.1:1 backlog=10 reuseport so_keepalive=30m::10 proxy_protocol; proxy_pass 127.0.0.1:2; } }", true, false},
	{"listen bad param", "stream { server { listen 1 fast; proxy_pass 127.0.0.1:2; } }", false, true},
	{"listen bad port", "stream { server { listen 65536; proxy_pass 127.0.0.1:2; } }", false, true},
	{"verify without trusted", "stream { server { listen 1; proxy_pass 127.0.0.1:2; proxy_ssl on; proxy_ssl_verify on; } }", false, false},
	{"verify inherited", "stream { proxy_ssl_verify on; proxy_ssl_trusted_certificate ca.pem; server { listen 1; proxy_pass 127.0.0.1:2; proxy_ssl on; } }", true, false},
	{"verify without trusted, ssl off", "stream { server { listen 1; proxy_pass 127.0.0.1:2; proxy_ssl_verify on; } }", true, false},
	{"cert without key", "stream { server { listen 1; proxy_pass 127.0.0.1:2; proxy_ssl on; proxy_ssl_certificate client.pem; } }", false, false},
	{"bad cert file", "stream { server { listen 1; proxy_pass 127.0.0.1:2; proxy_ssl on; proxy_ssl_certificate garbage.pem; proxy_ssl_certificate_key client.key; } }", false, false},
	{"missing key file", "stream { server { listen 1; proxy_pass 127.0.0.1:2; proxy_ssl on; proxy_ssl_certificate client.pem; proxy_ssl_certificate_key nope.key; } }", false, false},
	{"key mismatch", "stream { server { listen 1; proxy_pass 127.0.0.1:2; proxy_ssl on; proxy_ssl_certificate client.pem; proxy_ssl_certificate_key server.key; } }", false, false},
	{"bad trusted file", "stream { server { listen 1; proxy_pass 127.0.0.1:2; proxy_ssl on; proxy_ssl_verify on; proxy_ssl_trusted_certificate garbage.pem; } }", false, false},
	{"good crl", "stream { server { listen 1; proxy_pass 127.0.0.1:2; proxy_ssl on; proxy_ssl_verify on; proxy_ssl_trusted_certificate ca.pem; proxy_ssl_crl crl.pem; } }", true, false},
	{"missing include", "include nope.conf;", false, true},
	{"glob include without match", "include nope.d/*.conf;", true, false},
	{"include", "stream { include inc.conf; }", true, false},
	{"weight zero", "stream { upstream b { server 127.0.0.1:1 weight=0; } }", false, true},
	{"backup with hash", "stream { upstream b { hash $remote_addr; server 127.0.0.1:1 backup; } }", false, true},
	{"backup before random", "stream { upstream b { server 127.0.0.1:1; server 127.0.0.1:2 backup; random; } }", true, false},
	{"only backup before hash", "stream { upstream b { server 127.0.0.1:2 backup; hash $remote_addr; } }", false, true},
	{"backup with least_conn", "stream { upstream b { least_conn; server 127.0.0.1:1; server 127.0.0.1:2 backup; } }", true, false},
	{"random two", "stream { upstream b { random two least_conn; server 127.0.0.1:1 max_conns=10 max_fails=0 fail_timeout=1m; } }", true, false},
	{"empty upstream", "stream { upstream b {\n} }", false, true},
	{"duplicate upstream", "stream { upstream b { server 127.0.0.1:1; } upstream b { server 127.0.0.1:1; } }", false, true},
	{"zone", "stream { upstream b { zone z 64k; server 127.0.0.1:1; } }", true, false},
	{"zone without size", "stream { upstream b { zone z; server 127.0.0.1:1; } }", false, false},
	{"access log format", "stream { log_format basic '$remote_addr $status'; access_log logs.txt basic buffer=4k flush=1s; }", true, false},
	{"access log unknown format", "stream { access_log logs.txt nosuch; }", false, true},
	{"access log without format", "stream { access_log logs.txt; }", false, true},
	{"access log with variables", "stream { log_format f x; access_log logs_$server_port.txt f; }", true, false},
	{"access log with variables, buffered", "stream { log_format f x; access_log logs_$server_port.txt f buffer=4k; }", false, true},
	{"access log with variables, gzip", "stream { log_format f x; access_log logs_$server_port.txt f gzip; }", false, true},
	{"access log with an unknown variable", "stream { log_format f x; access_log logs_$nosuch.txt f; }", false, false}, // NGINX says it without file:line
	{"error_log levels", "error_log stderr warn; stream { error_log stderr info; server { listen 1; proxy_pass 127.0.0.1:2; error_log stderr notice; } }", true, false},
	{"bad log level", "stream { error_log stderr loud; }", false, true},
	{"resolver", "stream { resolver 127.0.0.1 valid=10s ipv6=off; resolver_timeout 5s; }", true, false},
	{"bad resolver param", "stream { resolver 127.0.0.1 ipv6=maybe; }", false, true},
	{"main directives", "worker_processes auto; worker_rlimit_nofile 1024; daemon off;", true, false},
	{"worker_shutdown_timeout", "worker_shutdown_timeout 10s;", true, false},
	{"worker_shutdown_timeout 0", "worker_shutdown_timeout 0;", true, false},
	{"worker_shutdown_timeout bad", "worker_shutdown_timeout 10x;", false, true},
	{"worker_shutdown_timeout month", "worker_shutdown_timeout 1M;", false, true},
	{"worker_shutdown_timeout duplicate", "worker_shutdown_timeout 1s;\nworker_shutdown_timeout 2s;", false, true},
	{"worker_shutdown_timeout args", "worker_shutdown_timeout;", false, true},
	{"worker_shutdown_timeout in stream", "stream { worker_shutdown_timeout 1s; }", false, true},
	// metrics_listen, proxy_ssl_watch (tlsrelay's own) and proxy_ssl_key_log
	// (NGINX Plus only) are unknown to NGINX 1.22: they are not fed to it;
	// engine/conf's own table tests (ops_test.go) cover them.
	{"bad worker_processes", "worker_processes many;", false, true},
	{"cpu affinity", "worker_processes 2; worker_cpu_affinity 01 10;", true, false},
	{"bad cpu affinity", "worker_cpu_affinity 012;", false, true},
	{"duplicate stream", "stream {} stream {}", false, true},
	{"unknown variable", "stream { server { listen 1; proxy_pass $backend; } }", false, false},
	{"braced variable", "stream { log_format f '${remote_addr}x $upstream_connect_time'; }", true, false},
	{"unclosed variable bracket", "stream { log_format f '${remote_addr'; }", false, false},
	{"deprecated buffer", "stream { server { listen 1; proxy_pass 127.0.0.1:2; proxy_downstream_buffer 8k; } }", true, false},
	{"too long token", "stream { log_format f " + strings.Repeat("a", 4100) + "; }", false, false},
	{"split_clients recipe", "stream { split_clients \"$remote_addr$remote_port\" $bindip { 25% 127.0.0.2; 25.5% 127.0.0.3; * 127.0.0.4; }\n" +
		"server { listen 1; proxy_pass 127.0.0.1:2; proxy_bind $bindip; } }", true, false},
	{"split_clients used above", "stream { server { listen 1; proxy_pass 127.0.0.1:2; proxy_bind $bindip; }\n" +
		"split_clients $remote_addr $bindip { * 127.0.0.2; } }", true, false},
	{"split_clients over 100%", "stream {\nsplit_clients $remote_addr $v {\n60% a;\n40.01% b;\n}\n}", false, true},
	{"split_clients three decimals", "stream {\nsplit_clients $remote_addr $v {\n0.125% a;\n}\n}", false, true},
	{"split_clients no percent sign", "stream {\nsplit_clients $remote_addr $v {\n50 a;\n}\n}", false, true},
	{"split_clients variable name", "stream {\nsplit_clients $remote_addr v {\n* a;\n}\n}", false, true},
	{"split_clients builtin variable", "stream {\nsplit_clients $remote_addr $remote_port {\n* a;\n}\n}", false, true},
	{"map", "stream { map $remote_addr $b { hostnames; default 127.0.0.9; 127.0.0.1 127.0.0.2; *.0.0.3 127.0.0.3; .0.0.4 x; www.example.* y;\n" +
		"~^127\\.0\\.0\\.(5) 127.0.0.$1; ~*^A z; \\default 127.0.0.8; }\nserver { listen 1; proxy_pass 127.0.0.1:2; proxy_bind $b; } }", true, false},
	{"map used above", "stream { server { listen 1; proxy_pass 127.0.0.1:2; proxy_bind $b; }\nmap $remote_addr $b { default 127.0.0.2; } }", true, false},
	{"map_hash sizes", "stream { map_hash_max_size 4096; map_hash_bucket_size 128; }", true, false},
	{"map duplicate default", "stream {\nmap $remote_addr $b {\ndefault a;\ndefault b;\n}\n}", false, true},
	{"map conflicting key", "stream {\nmap $remote_addr $b {\nKey a;\nkey b;\n}\n}", false, true},
	{"map three arguments", "stream {\nmap $remote_addr $b {\nkey a b;\n}\n}", false, true},
	{"map bad wildcard", "stream {\nmap $remote_addr $b {\nhostnames;\nwww.*.com a;\n}\n}", false, true},
	{"map dot wildcard conflict", "stream {\nmap $remote_addr $b {\nhostnames;\nexample.com a;\n.example.com b;\n}\n}", false, true},
	{"map variable name", "stream {\nmap $remote_addr b {\ndefault a;\n}\n}", false, true},
}

// TestNginxDifferential runs each case through `nginx -t` and through
// Parse: both must agree on accepting it.
func TestNginxDifferential(t *testing.T) {
	nginx := testutil.NeedProgram(t, "nginx", "nginx", "/usr/sbin/nginx")
	testutil.NeedFile(t, nginxStreamModule, "libnginx-mod-stream")
	pkiDir, _ := writePKI(t)
	if err := os.WriteFile(filepath.Join(pkiDir, "inc.conf"), []byte("upstream i { server 127.0.0.1:7; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	emerg := regexp.MustCompile(`\[emerg\] \d+#\d+: (.*)`)
	for _, tc := range nginxDiffCases {
		t.Run(tc.name, func(t *testing.T) {
			// One directory per case: the PKI and include are copied in so
			// relative paths resolve the same for both.
			dir := t.TempDir()
			entries, err := os.ReadDir(pkiDir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				data, err := os.ReadFile(filepath.Join(pkiDir, e.Name()))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, e.Name()), data, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			ngxConf := filepath.Join(dir, "nginx.conf")
			ngxSrc := "load_module " + nginxStreamModule + ";\nevents {}\n" + tc.src + "\n"
			if err := os.WriteFile(ngxConf, []byte(ngxSrc), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(nginx, "-t", "-q", "-p", dir+"/", "-c", ngxConf,
				"-g", "pid "+filepath.Join(dir, "nginx.pid")+"; error_log stderr;")
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			ngxOK := cmd.Run() == nil

			ourName := filepath.Join(dir, "tlsrelay.conf")
			ourSrc := "# load_module\n# events {}\n" + tc.src + "\n"
			_, _, ourErr := Parse(ourName, []byte(ourSrc), LoadOptions{Prefix: dir})

			if ngxOK != (ourErr == nil) {
				t.Fatalf("nginx accepts: %v, tlsrelay accepts: %v\nnginx: %s\ntlsrelay: %v", ngxOK, ourErr == nil, out.String(), ourErr)
			}
			if ngxOK != tc.ok {
				t.Errorf("both say ok=%v, the case expects %v\nnginx: %s", ngxOK, tc.ok, out.String())
			}
			if tc.sameMsg && ourErr != nil {
				m := emerg.FindStringSubmatch(out.String())
				if m == nil {
					t.Fatalf("no [emerg] line from nginx:\n%s", out.String())
				}
				norm := strings.NewReplacer(ngxConf, "CONF", ourName, "CONF", dir+"/", "DIR/")
				want, got := norm.Replace(m[1]), norm.Replace(strings.TrimPrefix(ourErr.Error(), "[emerg] "))
				if got != want {
					t.Errorf("messages differ\nnginx:    %s\ntlsrelay: %s", want, got)
				}
			}
		})
	}
	if n := len(nginxDiffCases); n < 30 {
		t.Errorf("only %d differential cases, want at least 30", n)
	}
}
