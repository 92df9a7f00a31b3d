package engine

import (
	"io"
	"strings"
	"testing"
	"time"
)

// The sub-states of a session's end, each driven through fake conns: what
// a closing session waits for (draining, held by a rate limit, lingering),
// and what one peer's end leaves while proxy_half_close relays the other
// direction (a half-closed side, a shut wanted until its queue drains).
// A failed write (a broken side) is TestStateMachineCloseDuringWrite's.

// closingStep names what the closing session waits for.
func closingStep(s *session) string {
	if s.phase != phaseClosing {
		return ""
	}
	return s.closing.String()
}

// isShut reports whether sd's write side was shut down.
func isShut(sd *side) bool { return sd.shut == shutDone }

// wantsShut reports whether sd's write side waits to be shut down.
func wantsShut(sd *side) bool { return sd.shut == shutWanted }

// TestClosingDrainingThenLingering: the client ends while the upstream
// does not read: the session drains (polled), then lingers for the
// upstream's end, then finishes when the upstream ends.
func TestClosingDrainingThenLingering(t *testing.T) {
	h := newSessTest(t, nil)
	h.open()
	h.up.block = true
	h.cli.in = []byte("request")
	h.traffic(h.cli)
	h.cli.deliverClose(nil)
	if got := closingStep(h.s); got != "draining" {
		t.Fatalf("client gone, upstream not reading: %q, want draining", got)
	}
	h.turn()
	if got := closingStep(h.s); got != "draining" {
		t.Fatalf("still not reading: %q, want draining", got)
	}
	h.up.drain()
	h.turn()
	if got := closingStep(h.s); got != "lingering" || !isShut(&h.s.up) {
		t.Fatalf("drained: %q, upstream shut %v; want lingering, shut", got, isShut(&h.s.up))
	}
	h.up.in = []byte("reply")
	h.up.deliverClose(nil)
	h.ended("client closed")
	if got := string(h.up.sent); got != "request" {
		t.Errorf("upstream got %q", got)
	}
}

// TestClosingLingerSlack: a lingering session stops waiting for an
// upstream that streams on to a client that left once it has read
// lingerSlack more than the client sent.
func TestClosingLingerSlack(t *testing.T) {
	h := newSessTest(t, nil)
	h.open()
	h.cli.in = []byte("bye")
	h.traffic(h.cli)
	h.cli.deliverClose(nil)
	h.turn()
	if got := closingStep(h.s); got != "lingering" {
		t.Fatalf("%q, want lingering", got)
	}
	chunk := []byte(strings.Repeat("s", 64<<10))
	for i := 0; i < 8 && h.s.phase != phaseDone; i++ {
		h.up.in = chunk
		h.traffic(h.up)
	}
	if h.s.phase != phaseDone {
		t.Fatalf("phase %s after %d bytes streamed to a client that left", h.s.phase, h.s.dropped)
	}
	h.ended("client closed")
	h.counters(3, 3, 0, 0)
}

// TestClosingHeldByRate: the upstream ends with more than the download
// rate allows this second: the session holds its close until the rate
// timer has let the rest through.
func TestClosingHeldByRate(t *testing.T) {
	h := newSessTest(t, func(srv *server) { srv.downloadRate = 8 })
	h.open()
	h.up.in = []byte(strings.Repeat("d", 20))
	h.up.deliverClose(nil)
	if got := closingStep(h.s); got != "held" || len(h.cli.sent) != 8 {
		t.Fatalf("%q with %d bytes to the client, want held with 8", got, len(h.cli.sent))
	}
	h.turn() // a poll does not release what the rate holds
	if got := closingStep(h.s); got != "held" || len(h.cli.sent) != 8 {
		t.Fatalf("after a poll: %q with %d bytes, want held with 8", got, len(h.cli.sent))
	}
	h.s.start = h.s.start.Add(-time.Second)
	h.s.onRate()
	if got := closingStep(h.s); got != "held" || len(h.cli.sent) != 16 {
		t.Fatalf("a second later: %q with %d bytes, want held with 16", got, len(h.cli.sent))
	}
	h.s.start = h.s.start.Add(-time.Second)
	h.s.onRate()
	h.ended("upstream closed")
	h.counters(0, 0, 20, 20)
}

// TestClosingHalfClosedHeldByRate: proxy_half_close on, the upstream shuts
// its side with more than the download rate allows this second: the
// client gets its FIN only after the last of those bytes, and the client's
// direction goes on meanwhile.
func TestClosingHalfClosedHeldByRate(t *testing.T) {
	h := newSessTest(t, func(srv *server) {
		srv.halfClose = true
		srv.downloadRate = 8
	})
	h.open()
	dup, peer := socketPairPeer(t)
	h.up.dup = dup
	h.up.in = []byte(strings.Repeat("d", 20))
	h.up.deliverClose(io.EOF)
	if h.s.phase != phaseOpen || h.s.up.state != sideHalf {
		t.Fatalf("upstream half-closed: phase %s, state %d; want open, half", h.s.phase, h.s.up.state)
	}
	if len(h.cli.sent) != 8 || isShut(&h.s.cli) {
		t.Fatalf("first second: %d bytes to the client, shut %v; want 8, not shut", len(h.cli.sent), isShut(&h.s.cli))
	}
	h.cli.in = []byte("still talking")
	h.traffic(h.cli)
	if got := string(readAvail(peer)); got != "still talking" {
		t.Fatalf("the half-closed upstream got %q", got)
	}
	for i := 0; i < 2; i++ {
		h.s.start = h.s.start.Add(-time.Second)
		h.s.onRate()
		h.turn()
	}
	if len(h.cli.sent) != 20 || !isShut(&h.s.cli) {
		t.Fatalf("after the rate let it through: %d bytes to the client, shut %v; want 20, shut", len(h.cli.sent), isShut(&h.s.cli))
	}
	h.cli.deliverClose(nil)
	h.turn()
	h.ended("client closed")
	h.counters(13, 13, 20, 20)
}

// TestClosingShutWanted: proxy_half_close on, the upstream shuts its side
// while the client does not read: the client's FIN waits until what is
// queued for it has gone.
func TestClosingShutWanted(t *testing.T) {
	h := newSessTest(t, func(srv *server) { srv.halfClose = true })
	h.open()
	h.up.dup = socketPair(t)
	h.cli.block = true
	h.up.in = []byte(strings.Repeat("q", 20))
	h.up.deliverClose(io.EOF)
	if !wantsShut(&h.s.cli) || h.s.cli.pending() == 0 {
		t.Fatalf("client not reading: shut wanted %v, %d bytes queued", wantsShut(&h.s.cli), h.s.cli.pending())
	}
	h.turn()
	if !wantsShut(&h.s.cli) {
		t.Fatal("shut before the queue drained")
	}
	h.cli.block = false
	h.turn()
	if !isShut(&h.s.cli) || string(h.cli.sent) != strings.Repeat("q", 20) {
		t.Fatalf("drained: shut %v, client got %q", isShut(&h.s.cli), h.cli.sent)
	}
	if h.s.phase != phaseOpen {
		t.Fatalf("phase %s, want open: the client's direction goes on", h.s.phase)
	}
	h.cli.deliverClose(nil)
	h.ended("client closed")
}
