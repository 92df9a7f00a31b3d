package engine

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/engine/errlog"
	"github.com/tlsrelay/tlsrelay/engine/proxyproto"
	"github.com/tlsrelay/tlsrelay/pool"
	"github.com/tlsrelay/tlsrelay/pool/dial"
	"github.com/tlsrelay/tlsrelay/tlsbridge"
)

// Active health checks (health_check): one pool.HealthChecker per server
// block with health_check, for the plan's lifetime. A probe's connection is
// made by the dialer's attempt, as a session's upstream connection is
// (dial.Probe): TCP connect bounded by proxy_connect_timeout with the
// server's socket options, the PROXY header when the server sends one, the
// TLS handshake with the server's policy (verification, client
// certificate, name, session resumption, the full handshake when a ticket
// is refused); then the match block's send and expect. The whole probe is
// bounded by health_check_timeout.

// errExpect is a probe whose answer does not satisfy the match block.
var errExpect = errors.New("the response does not match")

// startHealth starts the plan's health checkers; they end when ctx does
// (plan.free cancels it) or when the plan is retired (p.stopHealth), so a
// replaced plan whose sessions linger no longer holds peers out. A
// graceful quit ends them with p.holdHealth first: the peers stay as last
// probed. Runs on the goroutine that publishes the plan, before it is
// retired.
func (p *plan) startHealth(ctx context.Context, log *errlog.Log) {
	ctx, cancel := context.WithCancel(ctx)
	var checkers []*pool.HealthChecker
	p.stopHealth = func() {
		cancel()
		for _, h := range checkers {
			h.Stop()
		}
	}
	p.holdHealth = func() {
		for _, h := range checkers {
			h.Hold()
		}
		cancel()
	}
	for _, s := range p.servers {
		hc := s.conf.HealthCheck
		if hc == nil || s.group == nil {
			continue
		}
		var m *conf.Match
		if hc.Match != "" {
			m = p.cfg.Stream.Matches[hc.Match]
		}
		h := pool.NewHealthChecker(s.group, pool.HealthConfig{
			Interval: hc.Interval, Jitter: hc.Jitter, Fails: hc.Fails, Passes: hc.Passes,
			Timeout: s.conf.HealthCheckTimeout, Mandatory: hc.Mandatory,
			Probe: func(ctx context.Context, peer *pool.Peer) error { return s.probe(ctx, peer, hc.Port, m) },
			Logf: func(up bool, format string, args ...any) {
				lv := errlog.LevelWarn
				if up {
					lv = errlog.LevelNotice
				}
				log.Logf(lv, 0, "%s, server: %s", fmt.Sprintf(format, args...), s.name)
			},
		})
		checkers = append(checkers, h)
		go h.Run(ctx)
	}
}

// probe checks one peer for the server's health check (port 0: the peer's
// own port). The connection is made by the dialer's own attempt
// (dial.Probe, with probeJob): the connect with the server's socket
// options, the PROXY header, the handshake with the server's policy and
// its retry with a full handshake when a ticket is refused. Runs on a
// checker goroutine; ctx carries health_check_timeout.
func (s *server) probe(ctx context.Context, peer *pool.Peer, port int, m *conf.Match) error {
	deadline, ok := ctx.Deadline()
	if !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, conf.DefaultHealthCheckTimeout)
		defer cancel()
		deadline, _ = ctx.Deadline()
	}
	j := s.probeJob()
	res, a := dial.Probe(ctx, &j, peer, port)
	if a.Err != nil {
		if port != 0 {
			return fmt.Errorf("probing port %d: %w", port, a.Err)
		}
		return a.Err
	}
	var conn io.ReadWriter = res.Raw
	if res.TLS != nil {
		conn = res.TLS
		defer res.TLS.Close() // closes res.Raw
	} else {
		defer res.Raw.Close()
	}
	// Cancelling (a retired plan) ends a probe blocked in expect at once;
	// the dialer's attempt ended the connect and handshake by itself.
	defer context.AfterFunc(ctx, func() { res.Raw.SetDeadline(time.Now()) })()
	if res.TLS != nil && res.State.Version == tls.VersionTLS13 && (m == nil || m.Expect == "" && m.Regexp == nil) {
		// TLS 1.3 tickets come after the handshake: read them, so the
		// next probe resumes. They follow the server's Finished by about
		// a round trip, less than the handshake took.
		defer pullTickets(res.Raw, res.TLS, a.Handshake, deadline)
	}
	if m == nil {
		return nil
	}
	if m.Send != "" {
		if _, err := io.WriteString(conn, m.Send); err != nil {
			return fmt.Errorf("sending: %w", err)
		}
	}
	return expect(conn, m)
}

// probeJob is the dial job of the server's health probes: a session's,
// with the probe as its own client. The PROXY header names the probe's
// socket as both ends (UNKNOWN over a unix domain socket), and so do
// proxy_ssl_name's variables. Safe from any goroutine (it reads only the
// immutable server).
func (s *server) probeJob() dial.Job {
	j := dial.Job{ConnectTimeout: s.connectTimeout, Socket: s.sock}
	if s.policy != nil {
		j.TLS = func(p *pool.Peer, local net.Addr) (*tls.Config, error) { return s.tlsConfig(p, local, local, false) }
		j.FullTLS = func(p *pool.Peer, local net.Addr) (*tls.Config, error) { return s.tlsConfig(p, local, local, true) }
		j.Observe = func(p *pool.Peer, local net.Addr, cs tls.ConnectionState, err error) bool {
			t, v := s.target(p, local, local)
			return s.policy.Observe(t, v, cs, err)
		}
	}
	if s.proxyProtocol != 0 {
		v2 := proxyproto.Mode(s.proxyProtocol) == proxyproto.V2
		j.ProxyHeader = func(local net.Addr) []byte {
			la, _ := local.(*net.TCPAddr)
			if v2 {
				return proxyproto.V2Header(la, la)
			}
			return proxyproto.V1Header(la, la)
		}
	}
	return j
}

// pullTickets reads from a TLS 1.3 probe connection for about as long as
// its handshake took (10ms at least, not past the probe's deadline), so
// crypto/tls stores the session tickets the server sent; what the read
// returns does not matter.
func pullTickets(c net.Conn, tc *tlsbridge.Conn, took time.Duration, deadline time.Time) {
	if c.SetReadDeadline(minTime(deadline, time.Now().Add(max(took, 10*time.Millisecond)))) != nil {
		return
	}
	var b [1]byte
	_, _ = tc.Read(b[:])
}

// expect reads the answer until it satisfies m (a prefix, or the regular
// expression), up to 16 KiB or the probe's deadline.
func expect(r io.Reader, m *conf.Match) error {
	if m.Expect == "" && m.Regexp == nil {
		return nil
	}
	buf := make([]byte, 0, 4096)
	var tmp [4096]byte
	for {
		n, err := r.Read(tmp[:])
		buf = append(buf, tmp[:n]...)
		switch {
		case m.Regexp != nil && m.Regexp.Match(buf):
			return nil
		case m.Regexp == nil && len(buf) >= len(m.Expect):
			if bytes.HasPrefix(buf, []byte(m.Expect)) {
				return nil
			}
			return fmt.Errorf("%w: got %q", errExpect, truncate(buf, 64))
		case m.Regexp == nil && !bytes.HasPrefix([]byte(m.Expect), buf):
			return fmt.Errorf("%w: got %q", errExpect, truncate(buf, 64))
		case len(buf) >= 16<<10:
			return fmt.Errorf("%w: nothing in the first 16 KiB", errExpect)
		}
		if err != nil {
			return fmt.Errorf("%w: got %q before reading failed: %w", errExpect, truncate(buf, 64), err)
		}
	}
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
