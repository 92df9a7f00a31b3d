package bench

import (
	"crypto/tls"
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/pki"
)

func sampleResults() *Results {
	k := HandshakeKind{Version: tls.VersionTLS13, Key: pki.ECDSAP256}
	one := func(v float64) Summary { return Summarize([]float64{v}) }
	return &Results{
		Started: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC), Seconds: 75, Command: "tlsrelay-bench -out .",
		Workers: 2, Rounds: 3, LoadWorkers: 16, HandshakeSeconds: 2.5, HandshakeMaxConns: 20000,
		Machine: Machine{CPU: "Test CPU", Cores: 2, Kernel: "6.1", Go: "go1.26.8"},
		Peers: []PeerInfo{
			{Name: "tlsrelay", Available: true},
			{Name: "NGINX", Version: "nginx/1.22.1", Available: true},
			{Name: "HAProxy", Note: "not installed"},
		},
		Crypto: []CryptoRef{{Name: OpX25519KeyGen, NsPerOp: 30e3}, {Name: OpAESGCMBulk, NsPerOp: 5e3, MiBps: 3000}},
		Handshake: []HandshakeRow{{
			Kind: k, Name: k.String(), Floor: &Floor{Micros: 300, CachedMicros: 300, Ops: "x"},
			Cells: map[string]*HandshakeCell{
				"tlsrelay": {CPUMicros: Summarize([]float64{400, 500, 450}), ConnsPerSec: one(900), P50Millis: one(1), P99Millis: one(3), HitRate: one(0)},
				"NGINX":    {CPUMicros: one(900), ConnsPerSec: one(450), P50Millis: one(2), P99Millis: one(6), HitRate: one(0)},
			},
		}},
		Throughput: []ThroughputRow{{Conns: 1, BytesPerConn: 64 << 20, Cells: map[string]*ThroughputCell{
			"tlsrelay": {Err: "starting tlsrelay: exit status 1 | bad"},
			"NGINX":    {MiBps: one(200), CPUSecPerGiB: one(1.5)},
		}}},
		Memory: []MemoryRow{{Held: 2000, Cells: map[string]*MemoryCell{
			"tlsrelay": {KiBPerConn: one(20), Err: "1 of 3 rounds failed: x"},
			"NGINX":    {KiBPerConn: one(40)},
		}}},
	}
}

func TestMarkdown(t *testing.T) {
	md := Markdown(sampleResults())
	for _, want := range []string{
		"| TLS1.3 ecdsa-p256 full | 300 | – | 450 (400–500) | 900 | 0.50× |", // CPU µs and ratio
		"| TLS1.3 ecdsa-p256 full | 900 | 450 | 2.00× |",                     // conns/s
		"n/a (error: starting tlsrelay: exit status 1 \\| bad)",              // pipes escaped
		"| 2000 | 20.0 † | 40.0 | 0.50× |",
		"HAProxy | not measured: not installed",
		"tlsrelay-bench -out .", "Test CPU, 2 cores", "nginx/1.22.1",
		"bench/handshake-cost.svg", "bench/memory-per-conn.svg",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "| HAProxy |  ") || strings.Contains(md, "NaN") {
		t.Errorf("report has a column for a missing peer or a NaN:\n%s", md)
	}
}

func checkSVG(t *testing.T, name, svg string) {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(svg))
	for {
		_, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s is not well-formed XML: %v\n%s", name, err, svg)
		}
	}
	if strings.Contains(svg, "NaN") {
		t.Errorf("%s has a NaN:\n%s", name, svg)
	}
}

func TestCharts(t *testing.T) {
	res := sampleResults()
	hs := HandshakeSVG(res)
	checkSVG(t, "handshake chart", hs)
	if !strings.Contains(hs, "crypto floor") || !strings.Contains(hs, "tlsrelay") {
		t.Errorf("handshake chart lacks the floor or a proxy:\n%s", hs)
	}
	checkSVG(t, "memory chart", MemorySVG(res))
	checkSVG(t, "empty chart", MemorySVG(&Results{}))
}

func TestWriteReport(t *testing.T) {
	dir := t.TempDir()
	res := sampleResults()
	res.Handshake[0].Cells["NGINX"].HitRate = Summary{} // no value: must still encode
	if err := WriteReport(dir, res); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{ReportFile, JSONFile, HandshakeChart, MemoryChart} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// TestMarkdownHandshakeOnlyPeer: a peer measured in the handshake rows only
// (the BoringCrypto build) has a column there and none elsewhere, and the
// ratios stay tlsrelay/NGINX.
func TestMarkdownHandshakeOnlyPeer(t *testing.T) {
	res := sampleResults()
	res.Peers = append(res.Peers, PeerInfo{Name: "tlsrelay boringcrypto", Available: true, HandshakeOnly: true})
	res.Handshake[0].Cells["tlsrelay boringcrypto"] = &HandshakeCell{CPUMicros: Summarize([]float64{300}),
		ConnsPerSec: Summarize([]float64{1000}), P50Millis: Summarize([]float64{1}), P99Millis: Summarize([]float64{2})}
	md := Markdown(res)
	for _, want := range []string{
		"| handshake | floor, Go: chain checked / cached | floor, OpenSSL | tlsrelay | NGINX | tlsrelay boringcrypto | tlsrelay/NGINX |",
		"| TLS1.3 ecdsa-p256 full | 300 | – | 450 (400–500) | 900 | 300 | 0.50× |",
		"| 2000 | 20.0 † | 40.0 | 0.50× |", // memory: no third column
		"- Proxy CPU per new connection, tlsrelay boringcrypto/NGINX: TLS1.3 ecdsa-p256 full 0.33×.",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

// TestMarkdownBaselineColumn: the baseline build (make bench BASELINE=ref)
// has a column in the handshake, throughput and memory rows, each with a
// tlsrelay/baseline ratio, and a line at a glance; the RSS after bursts
// has its table.
func TestMarkdownBaselineColumn(t *testing.T) {
	res := sampleResults()
	one := func(v float64) Summary { return Summarize([]float64{v}) }
	res.Peers = append(res.Peers, PeerInfo{Name: "tlsrelay baseline", Version: "baseline abc1234", Available: true, Baseline: true})
	res.Handshake[0].Cells["tlsrelay baseline"] = &HandshakeCell{CPUMicros: one(500),
		ConnsPerSec: one(800), P50Millis: one(1), P99Millis: one(2)}
	res.Memory[0].Cells["tlsrelay"].BurstMiB = one(30)
	res.Memory[0].Cells["tlsrelay"].ClosedMiB = one(33)
	res.Memory[0].Cells["NGINX"].BurstMiB = one(10)
	res.Memory[0].Cells["NGINX"].ClosedMiB = one(11)
	res.Memory[0].Cells["tlsrelay baseline"] = &MemoryCell{KiBPerConn: one(25), IdleCPUPct: one(0.4),
		BaselineIdleCPUPct: one(0.1), BurstMiB: one(60), ClosedMiB: one(66)}
	res.Throughput[0].Cells["tlsrelay"] = &ThroughputCell{MiBps: one(300), CPUSecPerGiB: one(1.2)}
	res.Throughput[0].Cells["tlsrelay baseline"] = &ThroughputCell{MiBps: one(200), CPUSecPerGiB: one(1.5)}
	md := Markdown(res)
	for _, want := range []string{
		"| handshake | floor, Go: chain checked / cached | floor, OpenSSL | tlsrelay | NGINX | tlsrelay baseline | tlsrelay/NGINX | tlsrelay/tlsrelay baseline |",
		"| TLS1.3 ecdsa-p256 full | 300 | – | 450 (400–500) | 900 | 500 | 0.50× | 0.90× |",
		"| held connections | tlsrelay | NGINX | tlsrelay baseline | tlsrelay/NGINX | tlsrelay/tlsrelay baseline |",
		"| after new connections | 30.0 † | 10.0 | 60.0 | 3.00× | 0.50× |",
		"| after 2000 closed | 33.0 † | 11.0 | 66.0 | 3.00× | 0.50× |",
		"- Proxy CPU per new connection, tlsrelay/tlsrelay baseline (this build against the earlier one, same run): TLS1.3 ecdsa-p256 full 0.90×.",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	// The throughput table has the baseline's column and ratio.
	for _, want := range []string{
		"| connections | metric | tlsrelay | NGINX | tlsrelay baseline | tlsrelay/NGINX | tlsrelay/tlsrelay baseline |",
		"| 1 × 64 MiB | MiB/s | 300 | 200 | 200 | 1.50× | 1.50× |",
		"| 1 × 64 MiB | proxy CPU s/GiB | 1.20 | 1.50 | 1.50 | 0.80× | 0.80× |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}
