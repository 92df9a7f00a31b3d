// Package bench is the benchmark harness behind `make bench`: it runs
// tlsrelay beside NGINX (and HAProxy when installed) on the same machine, in
// the same run, against Go TLS upstreams (package internal/backend), and writes
// BENCHMARKS.md, a JSON file and SVG charts.
//
// What it measures, per proxy, in rounds that alternate between the proxies:
//
//   - handshake cost: the proxy's own CPU time per new client connection
//     (utime+stime from /proc/PID/stat of the proxy's processes alone),
//     connections per second and the latency of connect + first echo, for
//     full and resumed upstream handshakes, TLS 1.2 and 1.3, ECDSA P-256 and
//     RSA-2048 certificates, with a client certificate;
//   - the resumption hit rate as the upstreams count it (DidResume);
//   - throughput with 1 and 16 long connections and CPU seconds per GiB;
//   - RSS per idle proxied connection with thousands of connections held;
//   - reference speeds of Go's crypto on this CPU, and from them the least
//     each handshake kind must cost (its crypto floor);
//   - new connections at a sustained rate to one upstream address, in a
//     network namespace with tcp_tw_reuse 0 and 1,024 ephemeral ports, for
//     each way an upstream can close: whether the proxy, sending the first
//     FIN, runs out of ports in TIME_WAIT (rate.go; root only).
//
// The upstreams run in a child process (see ServeBackends) so that neither
// the harness nor the backends need more than the per-process descriptor
// limit when thousands of connections are held.
//
// Everything listens on loopback only, and every load loop is bounded in
// connection count and in time.
package bench
