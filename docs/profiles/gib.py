#!/usr/bin/env python3
"""Break a tlsrelay CPU profile of a throughput round into what a GiB costs."""
import subprocess, sys, re, collections
binary, profs = sys.argv[1], sys.argv[2:]
out = subprocess.run(["go", "tool", "pprof", "-traces", binary] + profs, capture_output=True, text=True).stdout
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
tot = collections.Counter(); total = 0
for b in out.split("-----------+-------------------------------------------------------"):
    m = re.search(r"^\s*(\d+(?:\.\d+)?)(ms|s)\s", b, re.M)
    if not m:
        continue
    v = float(m.group(1)) * (1000 if m.group(2) == "s" else 1)
    cat = "other"
    # leaf-first for syscalls: classify by the innermost frames we recognise
    for name, pat in rules:
        if re.search(pat, b):
            cat = name
            break
    tot[cat] += v; total += v
for k, v in sorted(tot.items(), key=lambda x: -x[1]):
    print(f"{v/total*100:5.1f}%  {k}")
print(f"total {total:.0f} ms")
