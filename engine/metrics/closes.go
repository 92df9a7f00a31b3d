package metrics

// UpstreamClose is which side of an upstream connection closed it first,
// and how: the label pair of upstream_closes_total{first,how}. The side
// that sends the first FIN keeps the socket in TIME_WAIT for 60 s, which
// on a real network (tcp_tw_reuse = 0) bounds the new connections a
// second from one source address to one upstream address: tlsrelay lets a
// TLS upstream close first (see docs/operations.md, "Load harnesses").
type UpstreamClose uint8

const (
	// CloseUnknown: no upstream socket, or the session has not ended.
	CloseUnknown UpstreamClose = iota
	// CloseUpstreamNotify: the upstream closed first, its FIN after its
	// close_notify (a TLS upstream's clean end).
	CloseUpstreamNotify
	// CloseUpstreamFIN: the upstream closed first with a FIN alone (no
	// close_notify before it: a plaintext upstream, or a TLS one that
	// answered tlsrelay's close_notify with its FIN only).
	CloseUpstreamFIN
	// CloseUpstreamReset: the upstream reset the connection (or closed
	// it at the moment tlsrelay's close_notify went, which its kernel
	// answers with a reset: the client and the upstream ended at once).
	CloseUpstreamReset
	// CloseRelayNotify: tlsrelay closed first, its FIN after its
	// close_notify (the upstream stayed silent after close_notify for
	// the linger's bound, or proxy_half_close passed the client's FIN on).
	CloseRelayNotify
	// CloseRelayFIN: tlsrelay closed first with a FIN alone (a plaintext
	// upstream, or a TLS one closed before any close_notify could go).
	CloseRelayFIN
	// CloseRelayReset: tlsrelay reset the connection (the client aborted,
	// or the stop gave up on it).
	CloseRelayReset
)

// UpstreamCloses is the number of UpstreamClose values, CloseUnknown
// included (not exported as a series).
const UpstreamCloses = int(CloseRelayReset) + 1

// Labels returns the values of the labels first ("upstream", "tlsrelay")
// and how ("close_notify", "fin", "reset"); "" and "" for CloseUnknown.
func (c UpstreamClose) Labels() (first, how string) {
	switch c {
	case CloseUpstreamNotify:
		return "upstream", "close_notify"
	case CloseUpstreamFIN:
		return "upstream", "fin"
	case CloseUpstreamReset:
		return "upstream", "reset"
	case CloseRelayNotify:
		return "tlsrelay", "close_notify"
	case CloseRelayFIN:
		return "tlsrelay", "fin"
	case CloseRelayReset:
		return "tlsrelay", "reset"
	}
	return "", ""
}

// UpstreamClosed counts how an upstream connection was closed, once per
// session that had one (CloseUnknown is not counted).
func (e *Engine) UpstreamClosed(c UpstreamClose) {
	if c != CloseUnknown && int(c) < UpstreamCloses {
		e.upCloses[c].Add(1)
	}
}
