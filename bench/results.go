package bench

import "time"

// Results is everything one run measured; it is written as
// bench/results.json and rendered as BENCHMARKS.md.
type Results struct {
	Started time.Time `json:"started"`
	// Seconds is the wall time of the whole run.
	Seconds float64 `json:"seconds"`
	// Command is the command line that produced the results.
	Command string  `json:"command"`
	Machine Machine `json:"machine"`
	Workers int     `json:"workers"`
	Rounds  int     `json:"rounds"`
	Quick   bool    `json:"quick"`
	// LoadWorkers is the load generator's concurrency in handshake rounds.
	LoadWorkers int `json:"load_workers"`
	// HandshakeSeconds and HandshakeMaxConns bound each handshake round.
	HandshakeSeconds  float64 `json:"handshake_seconds"`
	HandshakeMaxConns int     `json:"handshake_max_conns"`

	Peers  []PeerInfo  `json:"peers"`
	Crypto []CryptoRef `json:"crypto,omitempty"`
	// OpenSSLCrypto are the same primitives timed by `openssl speed`.
	OpenSSLCrypto []CryptoRef    `json:"openssl_crypto,omitempty"`
	Micro         []MicroResult  `json:"micro,omitempty"`
	Handshake     []HandshakeRow `json:"handshake,omitempty"`
	// Prewarm is the pre-warm row (prewarm.go).
	Prewarm    []PrewarmRow    `json:"prewarm,omitempty"`
	Throughput []ThroughputRow `json:"throughput,omitempty"`
	Memory     []MemoryRow     `json:"memory,omitempty"`
	// Rate is the sustained-rate row (rate.go).
	Rate *RateRow `json:"rate,omitempty"`
	// Notes are things the reader must know: missing peers, failures.
	Notes []string `json:"notes,omitempty"`
}

// PeerInfo describes one proxy column.
type PeerInfo struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
	// Available is false when the proxy is not installed; it then has no
	// column.
	Available bool   `json:"available"`
	Note      string `json:"note,omitempty"`
	// HandshakeOnly: measured in the handshake rows only
	// (Options.HandshakePeers).
	HandshakeOnly bool `json:"handshake_only,omitempty"`
	// Baseline: the earlier build of Options.Baseline, measured in the
	// handshake and memory rows.
	Baseline bool `json:"baseline,omitempty"`
}

// HandshakeRow is one handshake kind across the proxies.
type HandshakeRow struct {
	Kind HandshakeKind `json:"kind"`
	Name string        `json:"name"`
	// Floor is Go's crypto floor, OpenSSLFloor OpenSSL's.
	Floor        *Floor `json:"floor,omitempty"`
	OpenSSLFloor *Floor `json:"openssl_floor,omitempty"`
	// Cells by proxy name.
	Cells map[string]*HandshakeCell `json:"cells"`
}

// HandshakeCell is one proxy's result for one handshake kind.
type HandshakeCell struct {
	// Err is set when no round succeeded, or says how many failed.
	Err string `json:"error,omitempty"`
	// CPUMicros is the proxy's CPU time per completed connection.
	CPUMicros   Summary          `json:"cpu_us_per_conn"`
	ConnsPerSec Summary          `json:"conns_per_s"`
	P50Millis   Summary          `json:"p50_ms"`
	P99Millis   Summary          `json:"p99_ms"`
	HitRate     Summary          `json:"resumed_fraction"`
	Rounds      []HandshakeRound `json:"rounds"`
}

// HandshakeRound is one round of new connections through one proxy.
type HandshakeRound struct {
	Err         string  `json:"error,omitempty"`
	Conns       int     `json:"conns"`
	Errors      int     `json:"errors"`
	Seconds     float64 `json:"seconds"`
	CPUSeconds  float64 `json:"cpu_s"`
	CPUMicros   float64 `json:"cpu_us_per_conn"`
	ConnsPerSec float64 `json:"conns_per_s"`
	P50Millis   float64 `json:"p50_ms"`
	P99Millis   float64 `json:"p99_ms"`
	Handshakes  int64   `json:"upstream_handshakes"`
	Resumed     int64   `json:"upstream_resumed"`
	// UpstreamErrors are handshakes the upstreams saw fail.
	UpstreamErrors int64   `json:"upstream_handshake_errors"`
	HitRate        float64 `json:"resumed_fraction"`
}

// ThroughputRow is one throughput configuration across the proxies.
type ThroughputRow struct {
	Conns        int   `json:"conns"`
	BytesPerConn int64 `json:"bytes_per_conn"`
	// Plain: plaintext upstreams, no proxy_ssl.
	Plain bool                       `json:"plain,omitempty"`
	Cells map[string]*ThroughputCell `json:"cells"`
}

// suffix labels a plaintext row.
func (row ThroughputRow) suffix() string {
	if row.Plain {
		return ", plain TCP"
	}
	return ""
}

// ThroughputCell is one proxy's throughput result.
type ThroughputCell struct {
	Err          string            `json:"error,omitempty"`
	MiBps        Summary           `json:"mib_per_s"`
	CPUSecPerGiB Summary           `json:"cpu_s_per_gib"`
	Rounds       []ThroughputRound `json:"rounds"`
}

// ThroughputRound is one throughput round through one proxy.
type ThroughputRound struct {
	Err          string  `json:"error,omitempty"`
	Bytes        int64   `json:"bytes"`
	Seconds      float64 `json:"seconds"`
	CPUSeconds   float64 `json:"cpu_s"`
	MiBps        float64 `json:"mib_per_s"`
	CPUSecPerGiB float64 `json:"cpu_s_per_gib"`
}

// MemoryRow is one count of held connections across the proxies.
type MemoryRow struct {
	Held  int                    `json:"held"`
	Cells map[string]*MemoryCell `json:"cells"`
}

// MemoryCell is one proxy's memory result for one count.
type MemoryCell struct {
	Err        string  `json:"error,omitempty"`
	KiBPerConn Summary `json:"kib_per_conn"`
	// IdleCPUPct is the proxy's CPU use, in percent of one core, while
	// the connections are held and nothing moves; BaselineIdleCPUPct the
	// same with no connection.
	IdleCPUPct         Summary `json:"idle_cpu_pct"`
	BaselineIdleCPUPct Summary `json:"baseline_idle_cpu_pct"`
	// BurstMiB is the RSS after the warm-up's burst of new connections
	// and a short quiet, before any is held; ClosedMiB the RSS a few
	// seconds after the held connections closed at once (last row only).
	BurstMiB  Summary       `json:"burst_rss_mib"`
	ClosedMiB Summary       `json:"closed_rss_mib"`
	Rounds    []MemoryRound `json:"rounds"`
}

// MemoryRound is one measurement of RSS with connections held.
type MemoryRound struct {
	Err         string  `json:"error,omitempty"`
	BaselineMiB float64 `json:"baseline_rss_mib"`
	HeldMiB     float64 `json:"held_rss_mib"`
	KiBPerConn  float64 `json:"kib_per_conn"`
	// IdleCPUPct and BaselineIdleCPUPct: CPU use in percent of one core
	// with the connections held idle, and before any was opened.
	IdleCPUPct         float64 `json:"idle_cpu_pct"`
	BaselineIdleCPUPct float64 `json:"baseline_idle_cpu_pct"`
	// ClosedMiB is the RSS a few seconds after every held connection
	// closed (the round's last count only; 0 elsewhere).
	ClosedMiB float64 `json:"closed_rss_mib,omitempty"`
}
