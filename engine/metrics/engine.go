package metrics

import (
	"sync/atomic"
	"time"

	"github.com/tlsrelay/tlsrelay/pool/dial"
)

// Reason is why a session ended: the reason label of
// tlsrelay_sessions_ended_total, and (Text) the words of the access log's
// $close_reason and of the session's last error-log line. The engine keeps
// a session's Reason as this type from the moment it is known, so the log
// and the metric cannot disagree.
type Reason uint8

// Session end reasons.
const (
	// ReasonNone: not ended, or why not yet known. A session never ends
	// with it (SessionEnded counts it as ReasonOther).
	ReasonNone                Reason = iota
	ReasonClientClosed               // the client closed its side
	ReasonUpstreamClosed             // the upstream closed its side
	ReasonIdleTimeout                // proxy_timeout passed without traffic
	ReasonUpstreamUnreachable        // no upstream could be connected to
	ReasonDialQueueFull              // the dialer's queue was full
	ReasonResumeFailed               // a paused socket could not be resumed
	ReasonShutdown                   // the engine stopped (worker_shutdown_timeout, stop)
	ReasonForbidden                  // an allow/deny rule refused the client
	ReasonLimited                    // a limit_conn zone was full
	// ReasonUpstreamAborted: the upstream broke its stream (a reset, a
	// TLS stream that ended without close_notify, a TLS error); the
	// client's connection was reset in turn.
	ReasonUpstreamAborted
	// ReasonClientAborted: the client reset its connection; the
	// upstream's was reset in turn, with no close_notify.
	ReasonClientAborted
	ReasonOther // anything else
)

// Reasons is the number of Reason values, ReasonNone included (it has no
// series).
const Reasons = int(ReasonOther) + 1

// String returns the label value: "client_closed", "upstream_closed",
// "idle_timeout", "upstream_unreachable", "dial_queue_full",
// "resume_failed", "shutdown", "forbidden", "limit_conn",
// "upstream_aborted", "client_aborted" or "other" (ReasonNone and any
// value out of range too).
func (r Reason) String() string {
	switch r {
	case ReasonClientClosed:
		return "client_closed"
	case ReasonUpstreamClosed:
		return "upstream_closed"
	case ReasonIdleTimeout:
		return "idle_timeout"
	case ReasonUpstreamUnreachable:
		return "upstream_unreachable"
	case ReasonDialQueueFull:
		return "dial_queue_full"
	case ReasonResumeFailed:
		return "resume_failed"
	case ReasonShutdown:
		return "shutdown"
	case ReasonForbidden:
		return "forbidden"
	case ReasonLimited:
		return "limit_conn"
	case ReasonUpstreamAborted:
		return "upstream_aborted"
	case ReasonClientAborted:
		return "client_aborted"
	}
	return "other"
}

// Text returns the words the logs use: "client closed", "upstream
// closed", "idle timeout", "upstream unreachable", "dial queue full",
// "resume failed", "shutdown", "access forbidden", "limit_conn",
// "upstream aborted", "client aborted", "other"; "" for ReasonNone.
func (r Reason) Text() string {
	switch r {
	case ReasonNone:
		return ""
	case ReasonClientClosed:
		return "client closed"
	case ReasonUpstreamClosed:
		return "upstream closed"
	case ReasonIdleTimeout:
		return "idle timeout"
	case ReasonUpstreamUnreachable:
		return "upstream unreachable"
	case ReasonDialQueueFull:
		return "dial queue full"
	case ReasonResumeFailed:
		return "resume failed"
	case ReasonShutdown:
		return "shutdown"
	case ReasonForbidden:
		return "access forbidden"
	case ReasonLimited:
		return "limit_conn"
	case ReasonUpstreamAborted:
		return "upstream aborted"
	case ReasonClientAborted:
		return "client aborted"
	}
	return "other"
}

// Engine holds the engine's own counters. The zero value is ready. Every
// method is safe from any goroutine (event loops, dial workers, the
// scrape), takes no lock and does not allocate: each is one or a few atomic
// operations. Keep one Engine for the life of the process, across reloads,
// so that its counters are never reset.
type Engine struct {
	accepted                           atomic.Uint64
	active                             atomic.Int64
	ended                              [Reasons]atomic.Uint64
	fromClient, toClient, fromUp, toUp atomic.Uint64
	stalls, pauses, idleTimeouts       atomic.Uint64
	full, resumed, failedAttempts      atomic.Uint64
	reloadsOK, reloadsFailed           atomic.Uint64
	lastLoadNano                       atomic.Int64
	acceptFailures, refused            atomic.Uint64
	proxyHeaderFailures                atomic.Uint64
	prewarmed                          [dial.WarmResults]atomic.Uint64
	upCloses                           [UpstreamCloses]atomic.Uint64
}

// Prewarmed counts what became of a pre-warmed upstream connection
// (proxy_ssl_prewarm): used by a session, expired, closed by the
// upstream, or failed to dial.
func (e *Engine) Prewarmed(r dial.WarmResult) {
	if int(r) < len(e.prewarmed) {
		e.prewarmed[r].Add(1)
	}
}

// ProxyHeaderFailed counts a client whose PROXY header was malformed or
// late (it was closed before any upstream work).
func (e *Engine) ProxyHeaderFailed() { e.proxyHeaderFailures.Add(1) }

// AcceptFailed counts an accept() that failed (EMFILE, ENFILE and
// others); accepting pauses and the process goes on.
func (e *Engine) AcceptFailed() { e.acceptFailures.Add(1) }

// Refused counts a client closed at once because its loop had no
// worker_connections left.
func (e *Engine) Refused() { e.refused.Add(1) }

// Accepted returns the client connections accepted so far. Safe from any
// goroutine.
func (e *Engine) Accepted() uint64 { return e.accepted.Load() }

// SessionAccepted counts a client connection accepted: a session starts.
// Call it once per session, on the loop that accepted it.
func (e *Engine) SessionAccepted() {
	e.accepted.Add(1)
	e.active.Add(1)
}

// SessionEnded counts a session's end, once per session that
// SessionAccepted counted, with why it ended (Relayed counted its bytes).
func (e *Engine) SessionEnded(r Reason) {
	if r == ReasonNone || int(r) >= Reasons {
		r = ReasonOther
	}
	e.ended[r].Add(1)
	e.active.Add(-1)
}

// Relayed counts n bytes moved through a session as they move (not when
// the session ends, so that a long transfer shows in every scrape): read
// from the upstream and handed to the client when upstream is set, else
// read from the client and handed to the upstream.
func (e *Engine) Relayed(upstream bool, n int64) {
	if upstream {
		addBytes(&e.fromUp, n)
		addBytes(&e.toClient, n)
		return
	}
	addBytes(&e.fromClient, n)
	addBytes(&e.toUp, n)
}

func addBytes(c *atomic.Uint64, n int64) {
	if n > 0 {
		c.Add(uint64(n))
	}
}

// Stall counts a side that stopped being consumed (backpressure or rate
// limit).
func (e *Engine) Stall() { e.stalls.Add(1) }

// Pause counts a socket paused for backpressure.
func (e *Engine) Pause() { e.pauses.Add(1) }

// IdleTimeout counts a session ended by proxy_timeout (it ends with
// ReasonIdleTimeout as well).
func (e *Engine) IdleTimeout() { e.idleTimeouts.Add(1) }

// Handshake counts a completed upstream TLS handshake, for the totals of
// [Engine.Snapshot] (the per-peer series come from the peers, which the
// dialer feeds).
func (e *Engine) Handshake(resumed bool) {
	if resumed {
		e.resumed.Add(1)
	} else {
		e.full.Add(1)
	}
}

// AttemptFailed counts a failed upstream attempt (connect, PROXY header,
// handshake or verification), for the totals of [Engine.Snapshot].
func (e *Engine) AttemptFailed() { e.failedAttempts.Add(1) }

// Loaded records the time of the first configuration load at start: the
// last-success timestamp, without counting a reload.
func (e *Engine) Loaded(t time.Time) { e.lastLoadNano.Store(t.UnixNano()) }

// ReloadOK counts a reload that worked, at t.
func (e *Engine) ReloadOK(t time.Time) {
	e.reloadsOK.Add(1)
	e.lastLoadNano.Store(t.UnixNano())
}

// ReloadFailed counts a reload refused (the old configuration goes on).
func (e *Engine) ReloadFailed() { e.reloadsFailed.Add(1) }

// Active returns the sessions open now.
func (e *Engine) Active() int64 { return e.active.Load() }

// EngineSnapshot is an Engine's counters at one time.
type EngineSnapshot struct {
	Accepted uint64
	Active   int64
	// Ended is indexed by Reason.
	Ended                                                  [Reasons]uint64
	BytesFromClient, BytesToClient, BytesFromUp, BytesToUp uint64
	Stalls, Pauses, IdleTimeouts                           uint64
	// Full and Resumed count completed upstream handshakes, FailedAttempts
	// failed upstream attempts.
	Full, Resumed, FailedAttempts uint64
	ReloadsOK, ReloadsFailed      uint64
	// AcceptFailures counts failed accept() calls; Refused clients closed
	// for want of worker_connections.
	AcceptFailures, Refused uint64
	// ProxyHeaderFailures counts clients closed for a bad or late PROXY
	// header.
	ProxyHeaderFailures uint64
	// Prewarmed counts pre-warmed upstream connections by what became of
	// them, indexed by dial.WarmResult.
	Prewarmed [dial.WarmResults]uint64
	// UpstreamCloses counts upstream connections by which side closed
	// first and how, indexed by UpstreamClose.
	UpstreamCloses [UpstreamCloses]uint64
	// LastLoad is the time of the last load that worked; zero before
	// Loaded or ReloadOK.
	LastLoad time.Time
}

// Snapshot reads every counter. Each is read atomically; the set is not
// one instant (a session may be counted accepted and not yet ended).
func (e *Engine) Snapshot() EngineSnapshot {
	s := EngineSnapshot{
		Accepted:            e.accepted.Load(),
		Active:              e.active.Load(),
		BytesFromClient:     e.fromClient.Load(),
		BytesToClient:       e.toClient.Load(),
		BytesFromUp:         e.fromUp.Load(),
		BytesToUp:           e.toUp.Load(),
		Stalls:              e.stalls.Load(),
		Pauses:              e.pauses.Load(),
		IdleTimeouts:        e.idleTimeouts.Load(),
		Full:                e.full.Load(),
		Resumed:             e.resumed.Load(),
		FailedAttempts:      e.failedAttempts.Load(),
		ReloadsOK:           e.reloadsOK.Load(),
		ReloadsFailed:       e.reloadsFailed.Load(),
		AcceptFailures:      e.acceptFailures.Load(),
		Refused:             e.refused.Load(),
		ProxyHeaderFailures: e.proxyHeaderFailures.Load(),
	}
	for i := range e.ended {
		s.Ended[i] = e.ended[i].Load()
	}
	for i := range e.prewarmed {
		s.Prewarmed[i] = e.prewarmed[i].Load()
	}
	for i := range e.upCloses {
		s.UpstreamCloses[i] = e.upCloses[i].Load()
	}
	if n := e.lastLoadNano.Load(); n != 0 {
		s.LastLoad = time.Unix(0, n)
	}
	return s
}
