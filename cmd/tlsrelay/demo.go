package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tlsrelay/tlsrelay/engine"
	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
)

// demoConf is NGINX's guide example ("Securing TCP Traffic to Upstream
// Servers") pointed at the demo's own upstreams and files. The guide lists
// TLSv1 and TLSv1.1 too; the demo keeps the modern default.
const demoConf = `# NGINX's guide example, pointed at three local upstreams.
worker_processes 2;
error_log %s/error.log info;
stream {
    upstream backend {
        server %s;
        server %s;
        server %s;
    }

    server {
        listen     127.0.0.1:%d;
        proxy_pass backend;
        proxy_ssl  on;

        proxy_ssl_certificate         %s;
        proxy_ssl_certificate_key     %s;
        proxy_ssl_protocols           TLSv1.2 TLSv1.3;
        proxy_ssl_ciphers             HIGH:!aNULL:!MD5;
        proxy_ssl_trusted_certificate %s;

        proxy_ssl_verify        on;
        proxy_ssl_verify_depth  2;
        proxy_ssl_session_reuse on;
    }
}
`

// runDemo makes a PKI in a temporary directory, starts three TLS echo
// upstreams that require a client certificate, runs tlsrelay with the
// guide's configuration in front of them and prints the counters once a
// second until interrupted. Everything it starts stops with it.
func runDemo(args []string) int {
	fs := flag.NewFlagSet("tlsrelay demo", flag.ContinueOnError)
	port := fs.Int("port", 0, "port to listen on (0: a free one)")
	seconds := fs.Int("seconds", 0, "stop after this many seconds (0: at Ctrl-C)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := demo(*port, time.Duration(*seconds)*time.Second); err != nil {
		fmt.Fprintf(os.Stderr, "tlsrelay demo: %v\n", err)
		return 1
	}
	return 0
}

func demo(port int, limit time.Duration) error {
	dir, err := os.MkdirTemp("", "tlsrelay-demo-")
	if err != nil {
		return fmt.Errorf("making a temporary directory: %w", err)
	}
	defer os.RemoveAll(dir)

	set, err := pki.NewSet(pki.ECDSAP256, 1)
	if err != nil {
		return fmt.Errorf("making the PKI: %w", err)
	}
	files, err := set.WriteFiles(dir)
	if err != nil {
		return err
	}
	var ups []*backend.Server
	for i := 0; i < 3; i++ {
		s, err := backend.Start(backend.Config{TLS: set.ServerConfig(), Mode: backend.Echo})
		if err != nil {
			return fmt.Errorf("starting upstream %d: %w", i+1, err)
		}
		defer s.Close()
		ups = append(ups, s)
	}
	if port == 0 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("finding a free port: %w", err)
		}
		port = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
	}
	text := fmt.Sprintf(demoConf, dir, ups[0].Addr(), ups[1].Addr(), ups[2].Addr(), port,
		files.ClientCert, files.ClientKey, files.CA)
	path := filepath.Join(dir, "tlsrelay.conf")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		return fmt.Errorf("writing the configuration: %w", err)
	}
	cfg, _, err := conf.Load(path, conf.LoadOptions{Prefix: dir})
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if limit > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, limit)
		defer cancel()
	}
	ready := make(chan struct{})
	e, err := engine.New(cfg, engine.Options{Ready: func([]net.Addr) { close(ready) }})
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- e.Serve(ctx) }()
	select {
	case <-ready:
	case err := <-done:
		return err
	}

	fmt.Printf("tlsrelay demo: three TLS upstreams (client certificate required) at %s\n",
		strings.Join([]string{ups[0].Addr(), ups[1].Addr(), ups[2].Addr()}, ", "))
	fmt.Printf("configuration: %s (error log: %s/error.log)\n\n", path, dir)
	fmt.Printf("try it:   nc 127.0.0.1 %d        (type a line: the upstream echoes it)\n", port)
	fmt.Printf("or load:  for i in $(seq 100); do echo hi | nc -q1 127.0.0.1 %d; done\n\n", port)

	tk := time.NewTicker(time.Second)
	defer tk.Stop()
	st := e.Stats()
	for {
		select {
		case err := <-done:
			fmt.Println()
			return err
		case <-tk.C:
			var hs, resumed int64
			for _, u := range ups {
				s := u.Stats()
				hs += s.Handshakes
				resumed += s.Resumed
			}
			fmt.Printf("connections %d (open %d)  upstream handshakes: full %d, resumed %d  (upstreams counted %d resumed of %d)\n",
				st.Accepted.Load(), st.Active.Load(), st.Full.Load(), st.Resumed.Load(), resumed, hs)
		}
	}
}
