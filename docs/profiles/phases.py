#!/usr/bin/env python3
"""Break a tlsrelay CPU profile into the phases of a connection.
usage: phases.py BINARY PROFILE... (reads `go tool pprof -traces`)."""
from classify import report

# ordered: first rule whose pattern matches any frame of the stack wins
rules = [
    ("GC (background mark, sweep, scavenge)", r"runtime\.gcBgMarkWorker|runtime\.bgsweep|runtime\.bgscavenge|runtime\.gcStart|runtime\.forEachP|runtime\.markroot"),
    ("accept (listener goroutine, accept4)", r"engine\.\(\*listenSock\)\.serve|internal/poll\.\(\*FD\)\.Accept"),
    ("relay (traffic, pump, TLS records after the handshake)", r"engine\.\(\*session\)\.(onTraffic|pump|onClientTraffic|onUpstreamTraffic)|engine\.\(\*handler\)\.OnTraffic|gnet/v2\.\(\*eventloop\)\.read|gnet/v2\.\(\*eventloop\)\.write|gnet/v2\.\(\*conn\)\.Write"),
    ("close (sessions ending, close(2), access log)", r"gnet/v2\.\(\*eventloop\)\.close|engine\.\(\*session\)\.finish|engine\.\(\*session\)\.onClose|engine\.\(\*handler\)\.OnClose"),
    ("session setup on the loop (admit, balancer, OnOpen)", r"engine\.\(\*handler\)\.OnOpen|engine\.\(\*Engine\)\.(admit|newSession|openSession)|engine\.\(\*session\)\.onUpstreamOpen"),
    ("enrolment into gnet (dup, register, OnOpen hand-off)", r"gnet/v2\.\(\*eventloop\)\.enroll|gnet/v2\.\(\*eventloop\)\.register|ants/v2"),
    ("TCP connect to the upstream", r"net\.\(\*Dialer\)\.DialContext|net\.\(\*sysDialer\)|pool\.\(\*Dialer\)\.connect|net\.\(\*netFD\)\.connect|internal/poll\.\(\*FD\)\.Init"),
    ("handshake crypto: key exchange (X25519)", r"edwards25519|ecdh\.|fips140/ecdh|curve25519|mlkem"),
    ("verification (chain cache, names, signature)", r"crypto/x509|tlsbridge\.\(\*Policy\)\.verify|VerifyConnection|tlsbridge.*[vV]erif|fips140/ecdsa|fips140/nistec|fips140/rsa|fips140/bigmod"),
    ("handshake crypto: hashing, HKDF, AEAD setup", r"fips140/sha256|fips140/sha512|fips140/hkdf|fips140/tls13|fips140/hmac|fips140/aes"),
    ("handshake I/O (socket reads and writes through Go's netpoller)",
     (r"crypto/tls\.\(\*Conn\)\.(clientHandshake|handshakeContext)",
      r"internal/poll\.\(\*FD\)\.(Read|Write)|net\.\(\*conn\)\.(Read|Write)")),
    ("handshake messages and record layer (crypto/tls)", r"crypto/tls\.\(\*Conn\)\.(clientHandshake|handshakeContext|Handshake)|crypto/tls\.\(\*clientHandshakeState"),
    ("session tickets (store, lookup)", r"tlsbridge\.\(\*SessionStore\)|tlsbridge\.\(\*clientCache\)|ClientSessionCache"),
    ("dial job hand-off (dialer workers)", r"pool\.\(\*Dialer\)"),
    ("ticker, timers, polling", r"engine\.\(\*Engine\)\.tickLoops|engine\.\(\*loop\)\.Run"),
    ("event-loop wake-ups (epoll_wait, eventfd)", r"netpoll\.\(\*Poller\)\.Polling"),
    ("Go scheduler and netpoller (goroutine hand-offs)", r"runtime\.(schedule|findRunnable|mcall|park_m|netpoll|goready|ready|wakep|startm|stopm|notesleep|futex|exitsyscall|entersyscall|sysmon|mstart)"),
]

report(rules, "ms of samples")
