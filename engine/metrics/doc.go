// Package metrics is tlsrelay's one metrics surface: the engine, the
// dialer, the upstream peers and the TLS session stores count their facts
// where they learn them, with atomics only, and a [Collector] reads them at
// scrape time for Prometheus ([Handler]; the engine's metricsrv.go serves
// it on `metrics_listen`),
// while `demo` and tests read the same counters directly.
//
// # Who counts what
//
//   - [Engine] holds the engine's own facts (sessions accepted, active and
//     ended by [Reason], bytes, backpressure, idle timeouts, reloads, and
//     handshake totals for cheap reading). The engine calls its methods.
//   - [pool.Peer] counts its selections, failed attempts, active
//     connections, TLS handshakes (full, resumed, failed by class) and the
//     connect and handshake times; the [dial.Dialer] records those as it
//     dials and counts its goroutines and the dials in flight.
//   - [tlsbridge.SessionStore] counts the session tickets and keys it holds
//     and the tickets stored, evicted, expired and refused.
//
// Every record method is safe from any goroutine, takes no lock and does not
// allocate: it is one or a few atomic additions. Counters are never reset,
// by a reload or otherwise: the Engine lives as long as the process, peers
// carried over a reload keep their counts, and a peer that a reload removes
// leaves the scrape with its series (Prometheus handles series that end).
//
// # Series
//
// All names start with tlsrelay_. Per Prometheus practice, a failure
// breakdown is its own counter beside the total that includes the failures
// (upstream_handshakes_total{outcome="failed"} is the sum of
// upstream_handshake_failures_total over its classes), label values are a
// fixed set, and every value of a fixed set is exported, zeros included, so
// that rate() and absent() work from the first scrape.
//
//	sessions_accepted_total                      counter  client connections accepted
//	sessions_active                              gauge    sessions open now
//	sessions_ended_total{reason}                 counter  reason: client_closed, upstream_closed, idle_timeout,
//	                                                      upstream_unreachable, dial_queue_full, resume_failed,
//	                                                      shutdown, forbidden, limit_conn, other
//	bytes_total{direction}                       counter  direction: from_client, to_client, from_upstream,
//	                                                      to_upstream; counted when a session ends
//	backpressure_stalls_total                    counter  times a side stopped being consumed
//	backpressure_pauses_total                    counter  times a socket was paused
//	idle_timeouts_total                          counter  sessions ended by proxy_timeout
//	accept_failures_total                        counter  failed accept() calls (EMFILE, ...); accepting pauses
//	sessions_refused_total                       counter  clients closed: no worker_connections left
//	proxy_header_failures_total                  counter  clients closed: malformed or late PROXY header
//	upstream_prewarmed_total{result}             counter  pre-warmed upstream connections (proxy_ssl_prewarm)
//	                                                      result: used, expired, closed, failed
//	upstream_closes_total{first,how}             counter  upstream connections ended: first: upstream, tlsrelay
//	                                                      (the side that sent the first FIN, which keeps TIME_WAIT);
//	                                                      how: close_notify (then FIN), fin (alone), reset
//	upstream_prewarmed_ready                     gauge    pre-warmed connections ready now
//	reloads_total{result}                        counter  result: ok, failed
//	last_reload_success_timestamp_seconds        gauge    unix time of the last configuration load that worked
//	                                                      (the first load included); 0 before it
//	upstream_handshakes_total{upstream,peer,outcome}          counter  outcome: full, resumed, failed
//	upstream_handshake_failures_total{upstream,peer,class}    counter  class: tlsbridge.Reason names
//	                                                                   (unknown_ca, name_mismatch, ...,
//	                                                                   timeout, closed, handshake), other
//	upstream_handshake_groups_total{upstream,peer,group}      counter  completed handshakes by key exchange group:
//	                                                                   X25519MLKEM768, X25519, prime256v1, secp384r1,
//	                                                                   secp521r1, SecP256r1MLKEM768, other
//	upstream_handshake_duration_seconds{upstream,peer}        histogram completed handshakes
//	upstream_connect_duration_seconds{upstream,peer}          histogram successful TCP connects
//	upstream_peer_selections_total{upstream,peer}             counter  times a balancer picked the peer
//	upstream_peer_failures_total{upstream,peer}               counter  failed attempts (connect, PROXY
//	                                                                   header, handshake, verification)
//	upstream_peer_active_connections{upstream,peer}           gauge
//	upstream_health_checks_total{upstream,peer,result}        counter  result: ok, failed (health_check probes)
//	upstream_resolutions_total{upstream,result}               counter  result: ok, failed (DNS re-resolution of resolve servers)
//	proxy_pass_lookups_total{result}                          counter  result: cached, ok, failed, refused (names
//	                                                                   that proxy_pass values with variables give)
//	upstream_peer_state{upstream,peer,state}                  gauge    1 for the current state of up,
//	                                                                   banned, down, unhealthy, draining; 0 for the others
//	dial_in_flight{state}                        gauge    state: connecting (TCP connect, PROXY header),
//	                                                      handshaking (TLS)
//	dial_workers{state}                          gauge    state: busy, idle (their sum is the dialer's goroutines)
//	dial_jobs_total{result}                      counter  result: submitted, rejected (dialer closed),
//	                                                      cancelled (client gone or stop while dialing)
//	session_tickets                              gauge    upstream TLS sessions held
//	session_ticket_keys                          gauge    (endpoint, policy, names) keys held
//	session_tickets_stored_total                 counter
//	session_tickets_dropped_total{reason}        counter  reason: evicted, expired, refused
//
// upstream is the upstream group's name (the upstream block, or "host:port"
// of `proxy_pass host:port`); peer is the address connected to, "ip:port" as
// $upstream_addr shows it. Two peers of the same group and address (a server
// listed twice, or two names that resolve alike, or two implicit groups of
// the same name) are one series: their counts are added, their state is the
// best of theirs. The Go runtime's go_* and the process's process_* series
// come with [Handler].
package metrics
