#!/usr/bin/env bash
# System calls per new connection, tlsrelay beside NGINX: one handshake
# round of each (tlsrelay-bench), with strace -c -f attached to the proxy's
# processes for 3 s in the middle of the round; the counts are divided by
# the socket(2) calls (one upstream socket per client connection).
#   docs/profiles/syscalls.sh "TLS1.3 ecdsa-p256 resumed"
# Needs strace and nginx; writes /tmp/syscalls-{tlsrelay,nginx}.txt.
set -euo pipefail
kind=${1:-plain TCP (no proxy_ssl)}
cd "$(dirname "$0")/../.."
attach() { # attach NAME PGREP-ARGS...
  local name=$1; shift
  local pids=""
  for _ in $(seq 1 120); do pids=$( (pgrep "$@" || true) | sed 's/^/-p /' | tr '\n' ' '); [ -n "$pids" ] && break; sleep 0.25; done
  sleep 1
  # shellcheck disable=SC2086
  timeout 3 strace -c -f $pids -o "/tmp/syscalls-$name.txt" 2>/dev/null || true
}
./bin/tlsrelay-bench -tlsrelay bin/tlsrelay -out /tmp/syscalls-bench -only handshake -kinds "$kind" \
  -haproxy none -rounds 1 >/tmp/syscalls-bench.log 2>&1 &
bench=$!
attach tlsrelay -x tlsrelay
attach nginx -f "nginx: worker"
wait $bench
for p in tlsrelay nginx; do
  n=$(awk '$NF == "socket" {print $4}' "/tmp/syscalls-$p.txt")
  echo "$p: $n connections; calls per connection:"
  awk -v n="$n" '$1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" {printf "  %-14s %5.1f\n", $NF, $4 / n}' "/tmp/syscalls-$p.txt" | sort -k2 -nr | head -20
  awk -v n="$n" '$NF == "total" {printf "  %-14s %5.1f\n", "all", $4 / n}' "/tmp/syscalls-$p.txt"
done
