#!/usr/bin/env python3
"""Break a tlsrelay CPU profile of a throughput round into what a GiB costs.
usage: gib.py BINARY PROFILE... (reads `go tool pprof -traces`)."""
from classify import report

rules = [
    ("GC and runtime background", r"runtime\.gcBgMarkWorker|runtime\.bgsweep|runtime\.bgscavenge"),
    ("decryption (AES-128-GCM)", r"fips140/aes/gcm|gcmAes"),
    ("write(2) to the client", r"gnet/v2\.\(\*conn\)\.(Write|write|Writev)|gnet/v2\.\(\*eventloop\)\.write"),
    ("read(2) from the upstream", r"gnet/v2\.\(\*eventloop\)\.read[\s\S]*Syscall|^[\s\S]*unix\.read|syscall\.Read"),
    ("copies (memmove) and buffers", r"runtime\.memmove|bytes\.\(\*Buffer\)|bytebufferpool|elastic"),
    ("TLS record layer (headers, sequence, bookkeeping)", r"crypto/tls"),
    ("event loop (epoll_wait, dispatch)", r"netpoll\.\(\*Poller\)\.Polling"),
    ("Go scheduler", r"runtime\.(schedule|findRunnable|mcall|park_m|netpoll|futex|sysmon)"),
]

report(rules)
