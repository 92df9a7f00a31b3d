package engine

import (
	"errors"
	"net"

	"github.com/tlsrelay/tlsrelay/engine/errlog"
	"github.com/tlsrelay/tlsrelay/engine/proxyproto"
)

// The PROXY protocol where it meets the engine: the header a session sends
// its upstream (proxyHeader) and the header read off a client before its
// session starts (handProxied). Reading and writing the headers is
// package proxyproto's.

// proxyHeader returns the PROXY protocol header that tells the upstream
// who the client is; the dialer writes it in clear before the handshake.
// Runs on a dialer worker (see dialwork.go); it reads only fields fixed at
// the session's start. Its argument, the upstream socket's own address
// (the dialer's callback passes it), is not part of the header.
func (s *session) proxyHeader(_ net.Addr) []byte {
	src, _ := s.remote.(*net.TCPAddr)
	dst, _ := s.local.(*net.TCPAddr)
	if proxyproto.Mode(s.srv.proxyProtocol) == proxyproto.V2 {
		return proxyproto.V2Header(src, dst)
	}
	return proxyproto.V1Header(src, dst)
}

// handProxied reads the PROXY header of an accepted client, then hands
// it to a loop with what the header said. Runs on a goroutine of its own
// per client (a slow header holds nothing but it).
func (e *Engine) handProxied(c net.Conn, ls *listenSock, b *binding) {
	pi, err := proxyproto.Read(c, b.srv.conf.Core.ProxyProtocolTimeout)
	if err != nil {
		what := "broken header"
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			what = "client timed out"
		}
		e.log.Logf(errlog.LevelError, 0, "%s: %v while reading PROXY protocol, client: %s, server: %s", what, err, hostOf(c.RemoteAddr()), b.srv.name)
		e.m.ProxyHeaderFailed()
		c.Close()
		return
	}
	// This goroutine is the client's own: it can wait for the result.
	if ch := e.enroll(c, ls, b, pi); ch != nil {
		select {
		case res := <-ch:
			if e.enrollError(res.Err) {
				e.pauseAccepting()
			}
		case <-e.stopped:
		}
	}
}
