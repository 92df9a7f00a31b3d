package bench

// The child process of the sustained-rate row: one (proxy, upstream
// closing kind) pair in a network namespace of its own.

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/template"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tlsrelay/tlsrelay/internal/netns"
)

// The pair's fixed addresses. The namespace is empty, so they are free;
// both ports lie outside the ephemeral range, so neither takes a port from
// connect().
const (
	rateListen   = "127.0.0.2:7000"
	rateUpstream = "127.0.0.10:8443"
)

// RunRateChild is the body of the row's child process (`tlsrelay-bench
// -rate-child FILE`), started by the parent in a new network namespace: it
// sets the namespace up (tcp_tw_reuse 0, the spec's port range), starts
// the upstream and the proxy on its loopback, runs the load and writes the
// RatePair into spec.Out. A pair that could not be measured is written
// with its Err set; RunRateChild itself fails only when it cannot read the
// spec, set the namespace up or write the result. It runs on the child's
// main goroutine; the upstream and the load have goroutines of their own.
func RunRateChild(ctx context.Context, specPath string) error {
	js, err := os.ReadFile(specPath)
	if err != nil {
		return fmt.Errorf("reading the rate spec: %w", err)
	}
	var spec RateSpec
	if err := json.Unmarshal(js, &spec); err != nil {
		return fmt.Errorf("decoding the rate spec %s: %w", specPath, err)
	}
	// Room for every TIME_WAIT the load can leave (one per leg per
	// connection): past the limit the kernel would end them early and
	// free the ports the row is about.
	tw := max(2*spec.MaxConns+64, 262144)
	if err := netns.Setup(netns.Settings{TWReuse: 0, PortLow: spec.PortLow, PortHigh: spec.PortHigh, MaxTWBuckets: tw}); err != nil {
		return fmt.Errorf("setting the namespace up: %w", err)
	}
	pair := measureRatePair(ctx, spec)
	return WriteRatePair(spec.Out, pair)
}

// measureRatePair runs the pair: upstream, proxy, one echo, the load, then
// the TIME_WAIT count and the proxy's log.
func measureRatePair(ctx context.Context, spec RateSpec) RatePair {
	pair := RatePair{Proxy: spec.Proxy.Name, Kind: spec.Kind}
	up, err := startRateUpstream(spec)
	if err != nil {
		pair.Err = err.Error()
		return pair
	}
	defer up.Close()
	in, err := startRateProxy(spec)
	if err != nil {
		pair.Err = err.Error()
		return pair
	}
	defer in.Stop()
	// The upstream echoes 16 bytes and no more.
	msg := []byte("tlsrelay-bench:1")
	if err := rateEchoOnce(rateListen, net.IPv4(127, 0, 0, 1), msg, make([]byte, len(msg)), 5*time.Second); err != nil {
		pair.Err = fmt.Sprintf("no echo through %s: %v", spec.Proxy.Name, err)
		if t := in.logTail(); t != "" {
			pair.Err += ": " + t
		}
		return pair
	}
	lr := runRateLoad(ctx, rateLoad{
		addr: rateListen, workers: spec.LoadWorkers, maxConns: spec.MaxConns,
		duration: time.Duration(spec.Seconds * float64(time.Second)),
		timeout:  time.Duration(spec.ConnTimeout * float64(time.Second)),
	})
	pair.Seconds, pair.Conns, pair.Failed = lr.elapsed.Seconds(), lr.conns, lr.failed
	pair.ConnsPerSec = float64(lr.conns) / spec.Seconds
	pair.OKPerSec, pair.FailedPerSec = lr.ok, lr.fail
	pair.FirstFailure, pair.FirstErr = lr.firstFail, lr.firstErr
	pair.UpstreamAccepted, pair.UpstreamResumed = up.accepted.Load(), up.resumed.Load()
	if g := up.group.Load(); g != 0 {
		pair.Group = tls.CurveID(g).String()
	}
	_, port, _ := net.SplitHostPort(rateUpstream)
	upPort, _ := strconv.Atoi(port)
	tw, err := countTimeWait(upPort)
	if err != nil {
		pair.Err = err.Error()
		return pair
	}
	pair.TimeWaitProxy, pair.TimeWaitUpstream, pair.TimeWaitClient = tw.proxy, tw.upstream, tw.client
	if spec.Proxy.Type != "haproxy" {
		n := countLines(in.log, "Cannot assign requested address")
		pair.AddrNotAvail = &n
	}
	return pair
}

// rateUpstreamServer is the pair's TLS 1.3 echo upstream, ending each
// connection as its kind says. Each connection runs on its own goroutine.
type rateUpstreamServer struct {
	ln       net.Listener
	cfg      *tls.Config
	kind     string
	accepted atomic.Int64
	// resumed counts the handshakes that resumed a session; group is the
	// key exchange group of the first handshake (a tls.CurveID).
	resumed atomic.Int64
	group   atomic.Uint32
}

func startRateUpstream(spec RateSpec) (*rateUpstreamServer, error) {
	cfg, err := spec.Files.ServerConfig()
	if err != nil {
		return nil, fmt.Errorf("the upstream's TLS configuration: %w", err)
	}
	cfg.MinVersion = tls.VersionTLS13
	switch spec.Kind {
	case RateCloseNotify, RateBareFIN, RateUpstreamFirst:
	default:
		return nil, fmt.Errorf("unknown upstream closing kind %q", spec.Kind)
	}
	ln, err := net.Listen("tcp", rateUpstream)
	if err != nil {
		return nil, fmt.Errorf("listening for the upstream: %w", err)
	}
	u := &rateUpstreamServer{ln: ln, cfg: cfg, kind: spec.Kind}
	go u.accept()
	return u, nil
}

// accept runs on the upstream's accept goroutine until Close.
func (u *rateUpstreamServer) accept() {
	for {
		c, err := u.ln.Accept()
		if err != nil {
			return
		}
		u.accepted.Add(1)
		go u.serve(c)
	}
}

// serve runs on the connection's goroutine: handshake, a 16-byte echo,
// then the close its kind says, all within 10 s.
func (u *rateUpstreamServer) serve(raw net.Conn) {
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Server(raw, u.cfg)
	buf := make([]byte, 16)
	if _, err := io.ReadFull(tc, buf); err != nil {
		raw.Close()
		return
	}
	st := tc.ConnectionState()
	if st.DidResume {
		u.resumed.Add(1)
	}
	u.group.CompareAndSwap(0, uint32(st.CurveID))
	if _, err := tc.Write(buf); err != nil {
		raw.Close()
		return
	}
	if u.kind == RateUpstreamFirst {
		tc.Close()
		return
	}
	io.Copy(io.Discard, tc) // until the proxy's close_notify, FIN or reset
	if u.kind == RateBareFIN {
		raw.Close()
		return
	}
	tc.Close()
}

// Close stops accepting; connections still open end by their deadline.
func (u *rateUpstreamServer) Close() error { return u.ln.Close() }

// rateStream is the stream block of the row's tlsrelay and NGINX: their
// defaults, apart from what the row needs: listen, upstream, TLS with a
// client certificate, verification, the name the upstream's certificate
// carries, TLS 1.3 (NGINX 1.22's default protocols stop at TLS 1.2;
// "TLSv1.2 TLSv1.3" is tlsrelay's default and NGINX's since 1.23.4), and
// the other rows' key exchange groups: crypto/tls offers the post-quantum
// X25519MLKEM768 first and NGINX 1.22's OpenSSL 3.0 cannot, so at their
// defaults the two would not make the same handshake (tlsrelay's CPU per
// connection here was 1.6 times NGINX's that way in one run, 411 µs
// against 259).
var rateStream = template.Must(template.New("rate").Parse(`stream {
    upstream backend {
        server {{.Upstream}};
    }
    server {
        listen {{.Listen}};
        proxy_pass backend;
        proxy_ssl on;
        proxy_ssl_certificate {{.Files.ClientCert}};
        proxy_ssl_certificate_key {{.Files.ClientKey}};
        proxy_ssl_trusted_certificate {{.Files.CA}};
        proxy_ssl_verify on;
        proxy_ssl_name localhost;
        proxy_ssl_protocols TLSv1.2 TLSv1.3;
        proxy_ssl_conf_command Groups {{.Groups}};
    }
}
`))

// RateConfig returns the configuration of the row's tlsrelay (module ""
// and nginx false) or NGINX (nginx true, with its stream module when
// module is set): worker_processes and the stream block, and for NGINX
// what running it in the foreground with its files in spec.Dir needs.
func RateConfig(spec RateSpec, nginx bool) (string, error) {
	var b strings.Builder
	b.WriteString("# written by tlsrelay-bench (sustained-rate row)\n")
	if nginx && spec.Proxy.Module != "" {
		fmt.Fprintf(&b, "load_module %s;\n", spec.Proxy.Module)
	}
	fmt.Fprintf(&b, "worker_processes %d;\n", spec.Workers)
	if nginx {
		fmt.Fprintf(&b, "daemon off;\nmaster_process on;\npid %s;\nerror_log %s;\nevents {\n}\n",
			filepath.Join(spec.Dir, "nginx.pid"), filepath.Join(spec.Dir, "error.log"))
	}
	b.WriteString("\n")
	err := rateStream.Execute(&b, map[string]any{"Upstream": rateUpstream, "Listen": rateListen, "Files": spec.Files, "Groups": Groups})
	if err != nil {
		return "", fmt.Errorf("rendering the rate row's stream block: %w", err)
	}
	return b.String(), nil
}

// startRateProxy starts the pair's proxy on rateListen, to rateUpstream.
func startRateProxy(spec RateSpec) (*Instance, error) {
	p := spec.Proxy
	if p.Type == "haproxy" {
		ps := ProxySpec{
			Listen: rateListen, Upstreams: []string{rateUpstream}, Workers: spec.Workers,
			Version: tls.VersionTLS13, Reuse: true, Dir: spec.Dir,
			Material: &Material{Files: spec.Files, ClientCombined: spec.ClientCombined},
		}
		return HAProxy{Path: p.Path}.Start(ps)
	}
	nginx := p.Type == "nginx"
	if !nginx && p.Type != "tlsrelay" {
		return nil, fmt.Errorf("unknown proxy type %q", p.Type)
	}
	cfg, err := RateConfig(spec, nginx)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(spec.Dir, p.Type+".conf")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	if nginx {
		errLog := filepath.Join(spec.Dir, "error.log")
		return startProcess("nginx", []string{p.Path, "-p", spec.Dir, "-e", errLog, "-c", path}, errLog, rateListen, spec.Workers)
	}
	return startProcess("tlsrelay", []string{p.Path, "-c", path}, filepath.Join(spec.Dir, "tlsrelay.log"), rateListen, 0)
}

// timeWaits counts sockets in TIME_WAIT by where they are.
type timeWaits struct {
	proxy    int // the proxy's end of an upstream connection
	upstream int // the upstream's end
	client   int // either end of a client connection
}

// countTimeWait reads this namespace's /proc/net/tcp and counts the
// sockets in TIME_WAIT (state 06), sorted by whether upPort is their
// remote port (the proxy's side), their local port (the upstream's) or
// neither (the client leg).
func countTimeWait(upPort int) (timeWaits, error) {
	var tw timeWaits
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return tw, fmt.Errorf("counting TIME_WAIT sockets: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	hexPort := func(addr string) int {
		_, p, _ := strings.Cut(addr, ":")
		n, _ := strconv.ParseInt(p, 16, 32)
		return int(n)
	}
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[3] != "06" {
			continue
		}
		switch {
		case hexPort(f[2]) == upPort:
			tw.proxy++
		case hexPort(f[1]) == upPort:
			tw.upstream++
		default:
			tw.client++
		}
	}
	if err := sc.Err(); err != nil {
		return tw, fmt.Errorf("counting TIME_WAIT sockets: %w", err)
	}
	return tw, nil
}

// countLines counts the lines of the file at path that contain s (0 when
// it cannot be read).
func countLines(path, s string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			n++
		}
	}
	return n
}

// tailFile returns the last n lines of the file at path joined by " | ",
// for error messages ("" when it cannot be read).
func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// rateLoad is the row's load: workers clients, each in a loop connecting
// to addr, writing 16 bytes, reading them back and closing, until duration
// has passed or maxConns connections have started.
type rateLoad struct {
	addr     string
	workers  int
	maxConns int
	duration time.Duration
	// timeout bounds each connection, dial to echo.
	timeout time.Duration
}

// rateLoadResult is what a rateLoad did.
type rateLoadResult struct {
	conns, failed int
	elapsed       time.Duration
	// ok and fail count the connections that ended in each second.
	ok, fail  []int
	firstFail *float64
	firstErr  string
}

// runRateLoad runs l: a goroutine per worker. The clients' source
// addresses rotate over RateSourceAddrs loopback addresses (127.1.x.y),
// each with the whole ephemeral range, so the client leg never runs out
// of ports whatever the namespace's TIME_WAIT holds.
func runRateLoad(ctx context.Context, l rateLoad) rateLoadResult {
	secs := max(1, int((l.duration+time.Second-1)/time.Second))
	ok, fail := make([]atomic.Int64, secs), make([]atomic.Int64, secs)
	var (
		started, next atomic.Int64
		wg            sync.WaitGroup
		mu            sync.Mutex
		res           rateLoadResult
	)
	t0 := time.Now()
	end := t0.Add(l.duration)
	for w := 0; w < l.workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg, buf := make([]byte, 16), make([]byte, 16)
			for ctx.Err() == nil && time.Now().Before(end) && started.Add(1) <= int64(l.maxConns) {
				n := next.Add(1)
				copy(msg, fmt.Sprintf("%016x", n))
				err := rateEchoOnce(l.addr, rateSource(n), msg, buf, l.timeout)
				at := time.Since(t0)
				sec := min(int(at/time.Second), secs-1)
				if err == nil {
					ok[sec].Add(1)
					continue
				}
				fail[sec].Add(1)
				mu.Lock()
				if s := at.Seconds(); res.firstFail == nil || s < *res.firstFail {
					res.firstFail, res.firstErr = &s, err.Error()
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(t0)
	res.ok, res.fail = make([]int, secs), make([]int, secs)
	for i := range secs {
		res.ok[i], res.fail[i] = int(ok[i].Load()), int(fail[i].Load())
		res.conns += res.ok[i]
		res.failed += res.fail[i]
	}
	return res
}

// rateSource is the source address of connection n: 127.1.x.y, x in
// 0..15, y in 1..254.
func rateSource(n int64) net.IP {
	i := n % RateSourceAddrs
	return net.IPv4(127, 1, byte(i/254), byte(1+i%254))
}

// rateEchoOnce connects to addr from src (the port left to connect(),
// IP_BIND_ADDRESS_NO_PORT), writes msg, reads len(msg) bytes, checks them
// and closes, all within timeout.
func rateEchoOnce(addr string, src net.IP, msg, buf []byte, timeout time.Duration) error {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: timeout, Control: bindAddressNoPort}
	deadline := time.Now().Add(timeout)
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return fmt.Errorf("connecting to %s from %s: %w", addr, src, err)
	}
	defer c.Close()
	c.SetDeadline(deadline)
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("writing to %s: %w", addr, err)
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		return fmt.Errorf("reading the echo from %s: %w", addr, err)
	}
	if string(buf) != string(msg) {
		return fmt.Errorf("the echo from %s is %q, want %q", addr, buf, msg)
	}
	return nil
}

// bindAddressNoPort is a net.Dialer Control that sets
// IP_BIND_ADDRESS_NO_PORT: the source address is bound at once, the port
// chosen by connect() from the whole 4-tuple.
func bindAddressNoPort(_, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	})
	if err != nil {
		return fmt.Errorf("setting IP_BIND_ADDRESS_NO_PORT: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("setting IP_BIND_ADDRESS_NO_PORT: %w", serr)
	}
	return nil
}
