// Package dial makes tlsrelay's upstream connections. For a client session
// (a [Job] handed to [Dialer.Submit]) it walks the session's
// pool.Selection: TCP connect to the peer the balancer picked, under
// proxy_connect_timeout and with the server's socket options
// ([SocketOptions]: proxy_bind, transparent, proxy_socket_keepalive, the
// buffer sizes, tcp_nodelay); the PROXY header in clear; the TLS handshake
// under a fresh proxy_connect_timeout, over a tlsbridge.Conn, verification
// included; and on failure the next peer, as proxy_next_upstream allows.
// Each attempt's outcome goes to the Selection (Connected, Failed,
// Release) and to the peer's counters (pool.Peer.ObserveConnect and its
// siblings), and is kept in [Job.Attempts] for $upstream_addr and
// $upstream_connect_time.
//
// It is the one place of tlsrelay that dials an upstream: the balancers
// (package pool, which this package imports and which imports nothing
// of it) need no socket and no TLS.
//
// # Goroutines
//
// Handshakes block inside crypto/tls, so they run on goroutines, never on
// an event loop. By default every job gets a goroutine of its own at once
// (an idle one, or a new one), with no queue and no shared bound, so that a
// peer that never answers holds only the goroutines of the sessions that
// chose it (a shared, bounded set of workers let one silent upstream stall
// every server block: issue 18). Each job runs under a context of its own,
// so that [Job.Cancel] (the client left) and [Dialer.Close] (the process
// stops) end a connect or handshake in progress at once, without charging
// the peer.
//
// # One attempt
//
// An attempt is one connection to one peer: connect, PROXY header,
// handshake. A handshake that failed after offering a session ticket is
// retried once, on a new connection, with a full handshake (the policy's
// Observe drops the ticket): servers that mishandle resumption still work,
// and the retry does not count against the peer. The same attempt serves a
// session's job, the pre-warming refillers ([Dialer.Connect]) and the
// active health checks' probes ([Probe]), so that every upstream
// connection tlsrelay makes is made the same way: same socket options, same
// PROXY header, same handshake and retry.
//
// # Pre-warmed connections
//
// A [Warm] (proxy_ssl_prewarm) keeps connections handshaken in advance,
// per peer, dialed through [Dialer.Connect]; a job takes one once the
// balancer picked its peer ([Job.Warm]).
package dial
