package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
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

// demoConnections is how many echo connections the demo drives through
// the proxy before it hands over to the user.
const demoConnections = 10

// runDemo makes a PKI, starts three TLS echo upstreams that require a
// client certificate, runs tlsrelay with the guide's configuration in front
// of them, drives a few connections through it and reports how many
// upstream handshakes resumed, then prints the counters whenever they
// change until interrupted. Everything it starts stops with it.
func runDemo(args []string) int {
	fs := flag.NewFlagSet("tlsrelay demo", flag.ContinueOnError)
	port := fs.Int("port", 0, "port to listen on (0: a free one)")
	seconds := fs.Int("seconds", 0, "stop this many seconds after the demo's own connections (0: at Ctrl-C)")
	keep := fs.String("keep", "", "write the PKI and the configuration into this directory and leave them there")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := demo(os.Stdout, *port, time.Duration(*seconds)*time.Second, *keep); err != nil {
		fmt.Fprintf(os.Stderr, "tlsrelay demo: %v\n", err)
		return 1
	}
	return 0
}

// demo runs the demo, printing to w; it stops limit after its own
// connections (0: at SIGINT or SIGTERM). keep, if not "", is the directory for the PKI and the
// configuration, left in place; otherwise they go in a temporary
// directory removed at the end.
func demo(w io.Writer, port int, limit time.Duration, keep string) error {
	dir := keep
	if dir == "" {
		tmp, err := os.MkdirTemp("", "tlsrelay-demo-")
		if err != nil {
			return fmt.Errorf("making a temporary directory: %w", err)
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	} else {
		abs, err := filepath.Abs(keep)
		if err != nil {
			return fmt.Errorf("resolving %s: %w", keep, err)
		}
		if err := os.MkdirAll(abs, 0o755); err != nil {
			return fmt.Errorf("making %s: %w", abs, err)
		}
		dir = abs
	}

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
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
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

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	fmt.Fprintf(w, "tlsrelay demo: listening on %s, in front of three TLS upstreams (client certificate required) at %s\n",
		addr, strings.Join([]string{ups[0].Addr(), ups[1].Addr(), ups[2].Addr()}, ", "))
	fmt.Fprintf(w, "configuration: %s (error log: %s)\n\n", path, filepath.Join(dir, "error.log"))

	m := e.Metrics()
	before := m.Snapshot()
	if err := driveEcho(ctx, addr, demoConnections); err != nil {
		return err
	}
	fmt.Fprintf(w, "%d connections, one after another, each echoed its line: upstream handshakes full %d, resumed %d\n",
		demoConnections, m.Snapshot().Full-before.Full, m.Snapshot().Resumed-before.Resumed)
	fmt.Fprintf(w, "(a full handshake per upstream, then proxy_ssl_session_reuse resumes the sessions)\n\n")

	// bash is on every Debian system (it is Essential); nc and python3
	// are not.
	fmt.Fprintf(w, "try it with bash alone (no nc needed), one line through the proxy and back:\n")
	fmt.Fprintf(w, "  bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d; echo hello >&3; read -r l <&3; echo \"$l\"'\n", port)
	fmt.Fprintf(w, "or a hundred of them:\n")
	fmt.Fprintf(w, "  for i in $(seq 100); do bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d; echo hi >&3; read -r l <&3'; done\n", port)
	if keep != "" {
		fmt.Fprintf(w, "\nthe PKI and the configuration stay in %s; check them with\n  tlsrelay -t -c %s\n", dir, path)
		fmt.Fprintf(w, "(the upstreams it names run only while this demo does)\n")
	}
	fmt.Fprintln(w)

	if limit > 0 {
		t := time.AfterFunc(limit, cancel)
		defer t.Stop()
	}
	tk := time.NewTicker(time.Second)
	defer tk.Stop()
	var last string
	for {
		select {
		case err := <-done:
			return err
		case <-tk.C:
			var hs, resumed int64
			for _, u := range ups {
				s := u.Stats()
				hs += s.Handshakes
				resumed += s.Resumed
			}
			st := m.Snapshot()
			line := fmt.Sprintf("connections %d (open %d)  upstream handshakes: full %d, resumed %d  (upstreams counted %d resumed of %d)",
				st.Accepted, st.Active, st.Full, st.Resumed, resumed, hs)
			if line != last {
				fmt.Fprintln(w, line)
				last = line
			}
		}
	}
}

// driveEcho opens n connections to addr one after another; on each it
// writes a line and reads it back whole.
func driveEcho(ctx context.Context, addr string, n int) error {
	var d net.Dialer
	for i := 0; i < n; i++ {
		if err := echoOnce(ctx, &d, addr, fmt.Sprintf("hello %d\n", i)); err != nil {
			return fmt.Errorf("connection %d of %d: %w", i+1, n, err)
		}
	}
	return nil
}

func echoOnce(ctx context.Context, d *net.Dialer, addr, line string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	c.SetDeadline(dl)
	if _, err := io.WriteString(c, line); err != nil {
		return fmt.Errorf("writing: %w", err)
	}
	got := make([]byte, len(line))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("reading the echo: %w", err)
	}
	if string(got) != line {
		return fmt.Errorf("echo %q, want %q", got, line)
	}
	return nil
}
