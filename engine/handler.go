package engine

import (
	"time"

	"github.com/panjf2000/gnet/v2"
)

// handler is the engine's gnet.EventHandler. It is unexported so that the
// callbacks are not part of Engine's API; every callback but OnBoot runs
// on the loop of the conn it is given.
type handler struct {
	gnet.BuiltinEventEngine
	e *Engine
}

var _ gnet.EventHandler = (*handler)(nil)

// OnBoot records the gnet engine and starts learning the loops. Runs
// once, on the Serve goroutine, before the loops start.
func (h *handler) OnBoot(eng gnet.Engine) gnet.Action {
	h.e.eng = eng
	go h.e.bootLoops()
	return gnet.None
}

// OnOpen runs on the conn's loop for every conn the engine enrolls:
// accepted clients, upstreams after their handshake, resumed sockets, and
// the boot conns that introduce each loop.
func (h *handler) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	e := h.e
	switch v := c.Context().(type) {
	case *accepted:
		b := v.b
		if b.setOpts {
			b.apply(c)
		}
		v.lp.touch()
		if !v.lp.admit() {
			return nil, gnet.Close
		}
		b.srv.plan.sessionStarted()
		e.admit(c, v.lp, b.srv, v.pp, v.local)
	case *upOpen:
		v.s.onUpstreamOpen(c, v.res)
	case *reattach:
		v.s.onReattach(c, v.sd)
	default:
		// A conn through the door: the boot conns while the loops are
		// learned; anything later is a stranger.
		e.bootMu.Lock()
		defer e.bootMu.Unlock()
		if e.bootLeft > 0 && e.loopIdx[c.EventLoop()] == nil {
			lp := e.newLoop(c.EventLoop(), len(e.loops)-e.bootLeft)
			e.loops[lp.idx] = lp
			e.loopIdx[c.EventLoop()] = lp
			if e.bootLeft--; e.bootLeft == 0 {
				close(e.loopsKnown)
			}
		}
		return nil, gnet.Close
	}
	return nil, gnet.None
}

// OnTraffic runs on the conn's loop when it has input.
func (h *handler) OnTraffic(c gnet.Conn) gnet.Action {
	s, ok := c.Context().(*session)
	if !ok {
		c.Discard(-1)
		return gnet.None
	}
	s.lp.touch()
	s.onTraffic(c)
	return gnet.None
}

// OnClose runs on the conn's loop when gnet closes it.
func (h *handler) OnClose(c gnet.Conn, err error) gnet.Action {
	if s, ok := c.Context().(*session); ok {
		s.onClose(c, err)
	}
	return gnet.None
}

// OnTick is unused: the engine's ticker drives the loops' wheels (see
// tickLoops).
func (h *handler) OnTick() (time.Duration, gnet.Action) { return time.Hour, gnet.None }
