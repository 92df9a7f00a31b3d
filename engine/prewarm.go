package engine

import (
	"crypto/tls"
	"net"

	"github.com/tlsrelay/tlsrelay/engine/errlog"
	"github.com/tlsrelay/tlsrelay/pool"
	"github.com/tlsrelay/tlsrelay/pool/dial"
)

// Pre-warmed upstream connections (proxy_ssl_prewarm): a server block with
// the directive has a dial.Warm, built with the plan (newWarm) so that
// sessions, which read it from the immutable server, never race its
// creation; its refillers start when the plan is published (startWarm) and
// stop when it is retired or freed, closing the ready connections. A
// session takes a ready connection on its dial worker once the balancer
// picked the peer (dial.Job.Warm); it arrives like a dialed one
// (dial.Result), so onUpstreamOpen adopts it unchanged, and its first
// pump delivers what Poll kept (a ticket was stored already; server-first
// bytes go to the client).

// newWarm returns the server's pre-warm pool, or nil without
// proxy_ssl_prewarm. The configuration layer refused the settings that
// would make a handshake depend on the session (PROXY header, variables in
// the name or the certificate), so the dial template uses no session. Runs
// on the goroutine building the plan.
func (s *server) newWarm() *dial.Warm {
	pw := s.conf.Proxy.SSL.Prewarm
	if s.policy == nil || pw.Size <= 0 || s.group == nil {
		return nil
	}
	return dial.NewWarm(s.group, dial.WarmConfig{
		Size:    pw.Size,
		MaxIdle: pw.MaxIdle,
		Job: dial.Job{
			TLS:     func(p *pool.Peer, _ net.Addr) (*tls.Config, error) { return s.tlsConfig(p, nil, nil, false) },
			FullTLS: func(p *pool.Peer, _ net.Addr) (*tls.Config, error) { return s.tlsConfig(p, nil, nil, true) },
			Observe: func(p *pool.Peer, _ net.Addr, cs tls.ConnectionState, err error) bool {
				t, v := s.target(p, nil, nil)
				return s.policy.Observe(t, v, cs, err)
			},
			ConnectTimeout: s.connectTimeout,
			Socket:         s.sock,
		},
	})
}

// startWarm starts the refillers of the plan's pre-warm pools, dialing
// through e's dialer; p.stopWarm stops them (retire, free). Runs on the
// goroutine that publishes the plan, once the dialer exists.
func (p *plan) startWarm(e *Engine) {
	p.warmMu.Lock()
	defer p.warmMu.Unlock()
	if p.warmStopped {
		return // retired or freed already
	}
	for _, s := range p.servers {
		if s.warm == nil {
			continue
		}
		s.warm.Start(e.dialer, dial.WarmHooks{
			Count: e.m.Prewarmed,
			Logf: func(peer *pool.Peer, failed bool, err error) {
				if failed {
					e.log.Logf(errlog.LevelWarn, 0, "pre-warming a connection to upstream failed: %v, server: %s, upstream: \"%s\"", err, s.name, peer)
					return
				}
				e.log.Logf(errlog.LevelNotice, 0, "pre-warming connections to upstream works again, server: %s, upstream: \"%s\"", s.name, peer)
			},
		})
		p.warms = append(p.warms, s.warm)
	}
}

// stopWarm stops the plan's pre-warm pools and closes their ready
// connections; sessions of the plan that are still connecting dial
// instead. Any goroutine, more than once.
func (p *plan) stopWarm() {
	p.warmMu.Lock()
	warms := p.warms
	p.warms, p.warmStopped = nil, true
	p.warmMu.Unlock()
	for _, w := range warms {
		w.Stop()
	}
}
