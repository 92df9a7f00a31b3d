package engine

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/engine/errlog"
	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// testbed is a PKI on disk, some upstreams and a running engine.
type testbed struct {
	t    *testing.T
	dir  string
	eng  *Engine
	addr string // the first listener
	log  *testutil.Buffer
	done chan error
	stop context.CancelFunc
	quit chan struct{}
}

func newPKI(t *testing.T, k pki.KeyType, n int) (*pki.Set, pki.Files, string) {
	t.Helper()
	set, err := pki.NewSet(k, n)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files, err := set.WriteFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	return set, files, dir
}

// startUpstreams starts n TLS upstreams with the set's server chain that
// require its client certificate; mod may adjust each config.
func startUpstreams(t *testing.T, set *pki.Set, n int, mode backend.Mode, mod func(i int, c *tls.Config)) []*backend.Server {
	t.Helper()
	var ups []*backend.Server
	for i := 0; i < n; i++ {
		cfg := set.ServerConfig()
		if mod != nil {
			mod(i, cfg)
		}
		s, err := backend.Start(backend.Config{TLS: cfg, Mode: mode})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		ups = append(ups, s)
	}
	return ups
}

// startEngine parses text as a configuration ("{{dir}}" is replaced by
// the PKI directory) and serves it until the test ends.
func startEngine(t *testing.T, dir, text string) *testbed {
	t.Helper()
	text = strings.ReplaceAll(text, "{{dir}}", dir)
	// NGINX refuses port 0 in listen: each "127.0.0.1:0" becomes a
	// placeholder port below 100 that portZero binds as port 0.
	for n := 1; strings.Contains(text, "127.0.0.1:0;"); n++ {
		text = strings.Replace(text, "127.0.0.1:0;", fmt.Sprintf("127.0.0.1:%d;", n), 1)
	}
	path := filepath.Join(dir, "tlsrelay.conf")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := conf.Load(path, conf.LoadOptions{Prefix: dir})
	if err != nil {
		t.Fatalf("loading configuration: %v\n%s", err, text)
	}
	tb := &testbed{t: t, dir: dir, log: &testutil.Buffer{}, done: make(chan error, 1), quit: make(chan struct{})}
	ready := make(chan []net.Addr, 1)
	e, err := New(cfg, Options{
		Log:         errlog.New(tb.log, errlog.LevelInfo),
		Ready:       func(a []net.Addr) { ready <- a },
		Quit:        tb.quit,
		QuitTimeout: 10 * time.Second,
		Listen:      portZero,
	})
	if err != nil {
		t.Fatal(err)
	}
	tb.eng = e
	ctx, cancel := context.WithCancel(context.Background())
	tb.stop = cancel
	go func() { tb.done <- e.Serve(ctx) }()
	select {
	case a := <-ready:
		tb.addr = a[0].String()
	case err := <-tb.done:
		t.Fatalf("engine stopped before it was ready: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("engine not ready after 10s")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-tb.done:
		case <-time.After(30 * time.Second):
			t.Error("engine did not stop within 30s")
		}
		if t.Failed() {
			t.Logf("error log:\n%s", tb.logText())
		}
	})
	return tb
}

func (tb *testbed) logText() string {
	return tb.log.String()
}

// upstreamBlock renders an upstream block for the servers.
func upstreamBlock(name string, ups []*backend.Server, params ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "upstream %s {\n", name)
	for i, u := range ups {
		p := ""
		if i < len(params) {
			p = " " + params[i]
		}
		fmt.Fprintf(&b, "    server %s%s;\n", u.Addr(), p)
	}
	b.WriteString("}\n")
	return b.String()
}

// guideServer is the server block of NGINX's guide, pointed at local files.
const guideServer = `
    server {
        listen     127.0.0.1:0;
        proxy_pass backend;
        proxy_ssl  on;

        proxy_ssl_certificate         {{dir}}/client.pem;
        proxy_ssl_certificate_key     {{dir}}/client.key;
        proxy_ssl_protocols           TLSv1.2 TLSv1.3;
        proxy_ssl_ciphers             HIGH:!aNULL:!MD5;
        proxy_ssl_trusted_certificate {{dir}}/ca.pem;

        proxy_ssl_verify        on;
        proxy_ssl_verify_depth  2;
        proxy_ssl_session_reuse on;
        %s
    }
`

// guideConf is the guide's configuration over ups with extra directives in
// the server block.
func guideConf(ups []*backend.Server, extra string) string {
	return "worker_processes 2;\nevents { worker_connections 20000; }\nstream {\n" + upstreamBlock("backend", ups) + fmt.Sprintf(guideServer, extra) + "}\n"
}

// echoOnce connects, writes payload, reads the same number of bytes back
// and closes; it returns what came back.
func echoOnce(addr string, payload []byte, timeout time.Duration) ([]byte, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		errc <- err
	}()
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(c, got); err != nil {
		return got, fmt.Errorf("reading echo: %w", err)
	}
	if err := <-errc; err != nil {
		return got, fmt.Errorf("writing: %w", err)
	}
	return got, nil
}

// portZero is the tests' Options.Listen: the placeholder ports below 100
// that startEngine writes into listen directives are bound as port 0, so
// the kernel picks a free port and no test races for one.
func portZero(network, addr string, create func(network, addr string) (net.Listener, error)) (net.Listener, error) {
	if host, port, err := net.SplitHostPort(strings.SplitN(addr, "#", 2)[0]); err == nil && host == "127.0.0.1" {
		if n, err := strconv.Atoi(port); err == nil && n < 100 {
			return create(network, "127.0.0.1:0")
		}
	}
	return create(network, addr)
}
