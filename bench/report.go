package bench

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
)

// Report file names, relative to the output directory.
const (
	ReportFile        = "BENCHMARKS.md"
	JSONFile          = "bench/results.json"
	HandshakeChart    = "bench/handshake-cost.svg"
	MemoryChart       = "bench/memory-per-conn.svg"
	subjectName       = "tlsrelay"
	baselineName      = "NGINX"
	maxErrorTextWidth = 100
)

// WriteReport writes BENCHMARKS.md, the JSON file and the charts under
// dir.
func WriteReport(dir string, res *Results) error {
	if err := os.MkdirAll(filepath.Join(dir, "bench"), 0o755); err != nil {
		return fmt.Errorf("making %s/bench: %w", dir, err)
	}
	js, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding results: %w", err)
	}
	files := []struct {
		name string
		data []byte
	}{
		{JSONFile, append(js, '\n')},
		{HandshakeChart, []byte(HandshakeSVG(res))},
		{MemoryChart, []byte(MemorySVG(res))},
		{RateChart, []byte(RateSVG(res))},
		{ReportFile, []byte(Markdown(res))},
	}
	for _, f := range files {
		path := filepath.Join(dir, f.name)
		if err := os.WriteFile(path, f.data, 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	return nil
}

// columns returns the names of the proxies that were measured in every
// row group.
func columns(res *Results) []string { return columnsFor(res, "") }

// columnsFor returns the names of the proxies measured in the row group
// (RowHandshake, RowThroughput, RowMemory; "" for the rows every proxy is
// measured in): the handshake rows also have the builds measured there
// only, and these three have the baseline build.
func columnsFor(res *Results, group string) []string {
	var out []string
	for _, p := range res.Peers {
		if !p.Available {
			continue
		}
		switch {
		case p.Baseline && group != RowHandshake && group != RowMemory && group != RowThroughput:
			continue
		case p.HandshakeOnly && group != RowHandshake:
			continue
		}
		out = append(out, p.Name)
	}
	return out
}

// baselineColumn returns the name of the baseline build's column, if the
// run measured one.
func baselineColumn(res *Results) (string, bool) {
	for _, p := range res.Peers {
		if p.Available && p.Baseline {
			return p.Name, true
		}
	}
	return "", false
}

func hasColumn(cols []string, name string) bool {
	for _, c := range cols {
		if c == name {
			return true
		}
	}
	return false
}

// num formats a value with a precision that suits its size.
func num(v float64) string {
	a := math.Abs(v)
	switch {
	case math.IsNaN(v):
		return "–"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// summaryText renders "median (min–max)", or the median alone for one
// round; scale multiplies every value.
func summaryText(s Summary, scale float64) string {
	if !s.Valid() {
		return "–"
	}
	if s.N == 1 || s.Min == s.Max {
		return num(s.Median * scale)
	}
	return fmt.Sprintf("%s (%s–%s)", num(s.Median*scale), num(s.Min*scale), num(s.Max*scale))
}

// errorText renders an error cell: "n/a (error: …)", shortened and safe
// inside a table.
func errorText(err string) string {
	err = strings.Join(strings.Fields(err), " ")
	if len([]rune(err)) > maxErrorTextWidth {
		err = string([]rune(err)[:maxErrorTextWidth]) + "…"
	}
	return "n/a (error: " + strings.ReplaceAll(err, "|", "\\|") + ")"
}

// cellText renders one value of one proxy: the summary, the error when no
// round succeeded, or the summary with a dagger when some failed.
func cellText(s Summary, err string, scale float64) string {
	switch {
	case !s.Valid() && err != "":
		return errorText(err)
	case err != "":
		return summaryText(s, scale) + " †"
	default:
		return summaryText(s, scale)
	}
}

// pairRatio renders a/b of two cells' summaries, "–" when either is
// missing.
func pairRatio[C any](a, b *C, get func(*C) Summary) string {
	if a == nil || b == nil {
		return "–"
	}
	return ratioText(get(a), get(b))
}

// ratioText renders subject/baseline medians as "0.42×".
func ratioText(a, b Summary) string {
	r := Ratio(a, b)
	if math.IsNaN(r) {
		return "–"
	}
	return fmt.Sprintf("%.2f×", r)
}

type mdTable struct {
	b      *strings.Builder
	header []string
}

func newTable(b *strings.Builder, header ...string) *mdTable {
	t := &mdTable{b: b, header: header}
	b.WriteString("| " + strings.Join(header, " | ") + " |\n")
	seps := make([]string, len(header))
	for i := range seps {
		seps[i] = "---"
		if i > 0 {
			seps[i] = "--:"
		}
	}
	b.WriteString("|" + strings.Join(seps, "|") + "|\n")
	return t
}

func (t *mdTable) row(cells ...string) {
	t.b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
}

// Markdown renders BENCHMARKS.md.
func Markdown(res *Results) string {
	var b strings.Builder
	cols := columns(res)
	ratioHead := subjectName + "/" + baselineName
	haveRatio := hasColumn(cols, subjectName) && hasColumn(cols, baselineName)
	if !haveRatio {
		ratioHead = subjectName + "/" + baselineName + " (needs both)"
	}
	fmt.Fprintf(&b, "# Benchmarks\n\n")
	fmt.Fprintf(&b, "Written by `tlsrelay-bench` (`make bench`) on %s; do not edit by hand. The method is in\n", res.Started.UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "[docs/benchmarks.md](docs/benchmarks.md); every number below comes from the run described here.\n\n")
	fmt.Fprintf(&b, "```\n%s\n```\n\n", res.Command)
	mode := "default"
	if res.Quick {
		mode = "quick (BENCH_QUICK=1)"
	}
	fmt.Fprintf(&b, "Run: %s, %d round(s) per proxy and configuration, rounds alternating between the proxies; the run took %s.\n",
		mode, res.Rounds, fmtSeconds(res.Seconds))
	fmt.Fprintf(&b, "Each cell is the median over rounds, with (min–max) when there were several. Ratios are %s medians divided by %s medians from this same run: below 1× means tlsrelay needs less (CPU, memory, latency) — or, for rates, that it is slower.\n", subjectName, baselineName)
	fmt.Fprintf(&b, "Proxies: `worker_processes %d` for tlsrelay and NGINX, `nbthread %d` for HAProxy; nothing is pinned.\n\n", res.Workers, res.Workers)

	if glance := atAGlance(res); len(glance) > 0 {
		b.WriteString("## At a glance\n\n")
		for _, g := range glance {
			b.WriteString("- " + g + "\n")
		}
		b.WriteString("\n")
	}

	b.WriteString("## Machine and versions\n\n")
	b.WriteString("| | |\n|---|---|\n")
	t := &mdTable{b: &b}
	m := res.Machine
	t.row("CPU", fmt.Sprintf("%s, %d cores", m.CPU, m.Cores))
	t.row("Memory", m.MemTotal)
	t.row("Kernel", m.Kernel)
	t.row("Go", m.Go)
	t.row("OpenSSL", orDash(m.OpenSSL))
	for _, p := range res.Peers {
		v := orDash(p.Version)
		if !p.Available {
			v = "not measured: " + p.Note
		}
		t.row(p.Name, v)
	}
	b.WriteString("\n")

	baseName, haveBase := baselineColumn(res)
	baseHead := subjectName + "/" + baseName // the tlsrelay/baseline column
	if len(res.Handshake) > 0 {
		cols := columnsFor(res, RowHandshake)
		b.WriteString("## 1. Handshake cost\n\n")
		fmt.Fprintf(&b, "New client connections through the proxy: %d concurrent Go clients each connect in plaintext, write 16 bytes, read the echo and close, for %s or %d connections per round, after a warm-up. The proxy makes one upstream TLS connection per client, with a client certificate (mutual TLS), verifying a chain of leaf + %d intermediate, X25519 key exchange. *Full* is `proxy_ssl_session_reuse off`, *resumed* is `on`.\n\n",
			res.LoadWorkers, fmtSeconds(res.HandshakeSeconds), res.HandshakeMaxConns, Intermediates)
		fmt.Fprintf(&b, "![proxy CPU per new connection](%s)\n\n", HandshakeChart)
		b.WriteString("### Proxy CPU per new client connection (µs; utime+stime of the proxy's processes ÷ connections)\n\n")
		head := []string{"handshake", "floor, Go: chain checked / cached", "floor, OpenSSL"}
		head = append(head, cols...)
		head = append(head, ratioHead)
		if haveBase {
			head = append(head, baseHead)
		}
		t := newTable(&b, head...)
		for _, row := range res.Handshake {
			floor := "–"
			if row.Floor != nil {
				floor = num(row.Floor.Micros)
				if row.Floor.CachedMicros != row.Floor.Micros {
					floor += " / " + num(row.Floor.CachedMicros)
				}
			}
			sslFloor := "–"
			if row.OpenSSLFloor != nil {
				sslFloor = num(row.OpenSSLFloor.Micros)
			}
			cells := []string{row.Name, floor, sslFloor}
			for _, c := range cols {
				hc := row.Cells[c]
				cells = append(cells, cellText(hc.CPUMicros, hc.Err, 1))
			}
			cells = append(cells, handshakeRatio(row, func(c *HandshakeCell) Summary { return c.CPUMicros }))
			if haveBase {
				cells = append(cells, pairRatio(row.Cells[subjectName], row.Cells[baseName], func(c *HandshakeCell) Summary { return c.CPUMicros }))
			}
			t.row(cells...)
		}
		b.WriteString("\n### New connections per second\n\n")
		t = newTable(&b, append(append([]string{"handshake"}, cols...), ratioHead)...)
		for _, row := range res.Handshake {
			cells := []string{row.Name}
			for _, c := range cols {
				hc := row.Cells[c]
				cells = append(cells, cellText(hc.ConnsPerSec, hc.Err, 1))
			}
			cells = append(cells, handshakeRatio(row, func(c *HandshakeCell) Summary { return c.ConnsPerSec }))
			t.row(cells...)
		}
		b.WriteString("\n### Latency of connect + first echo, p50 / p99 (ms)\n\n")
		t = newTable(&b, append(append([]string{"handshake"}, cols...), ratioHead+" p50", "p99")...)
		for _, row := range res.Handshake {
			cells := []string{row.Name}
			for _, c := range cols {
				hc := row.Cells[c]
				if !hc.P50Millis.Valid() {
					cells = append(cells, cellText(Summary{}, hc.Err, 1))
					continue
				}
				cells = append(cells, num(hc.P50Millis.Median)+" / "+num(hc.P99Millis.Median))
			}
			cells = append(cells,
				handshakeRatio(row, func(c *HandshakeCell) Summary { return c.P50Millis }),
				handshakeRatio(row, func(c *HandshakeCell) Summary { return c.P99Millis }))
			t.row(cells...)
		}
		b.WriteString("\n## 2. Resumption hit rate (as the upstreams count it: `DidResume` ÷ handshakes)\n\n")
		t = newTable(&b, append(append([]string{"handshake"}, cols...), ratioHead)...)
		for _, row := range res.Handshake {
			cells := []string{row.Name}
			for _, c := range cols {
				hc := row.Cells[c]
				cells = append(cells, percentText(hc.HitRate, hc.Err))
			}
			cells = append(cells, handshakeRatio(row, func(c *HandshakeCell) Summary { return c.HitRate }))
			t.row(cells...)
		}
		b.WriteString("\n")
	}
	if len(res.Micro) > 0 {
		b.WriteString("### Go micro-benchmark: one handshake without sockets\n\n")
		b.WriteString("`bench/handshake_test.go` (`go test -bench Handshake ./bench`), run here through `testing.Benchmark`: a Go client and a Go server in one process over an in-memory pipe, mutual TLS with ECDSA P-256, X25519; the time is client **plus** server.\n\n")
		t := newTable(&b, "benchmark", "µs/op", "allocs/op", "KiB/op")
		for _, m := range res.Micro {
			t.row(m.Name, num(m.NsPerOp/1e3), fmt.Sprint(m.AllocsPerOp), num(float64(m.BytesPerOp)/1024))
		}
		b.WriteString("\n")
	}
	b.WriteString(prewarmMarkdown(res))
	if len(res.Throughput) > 0 {
		cols := columnsFor(res, RowThroughput)
		b.WriteString("## 3. Throughput\n\n")
		b.WriteString("Long connections through the proxy, TLS 1.3 upstream with ECDSA P-256 certificates and reuse on (the Go upstreams pick AES-128-GCM on CPUs with AES instructions): each upstream sends a fixed number of bytes and closes, the client reads to EOF and checks the count. MiB/s is payload over the round's wall time; CPU s/GiB is the proxy's CPU time per GiB of payload.\n\n")
		head := append(append([]string{"connections", "metric"}, cols...), ratioHead)
		if haveBase {
			head = append(head, baseHead)
		}
		t := newTable(&b, head...)
		for _, row := range res.Throughput {
			label := fmt.Sprintf("%d × %d MiB%s", row.Conns, row.BytesPerConn>>20, row.suffix())
			for _, metric := range []struct {
				name string
				get  func(*ThroughputCell) Summary
			}{
				{"MiB/s", func(c *ThroughputCell) Summary { return c.MiBps }},
				{"proxy CPU s/GiB", func(c *ThroughputCell) Summary { return c.CPUSecPerGiB }},
			} {
				cells := []string{label, metric.name}
				for _, c := range cols {
					tc := row.Cells[c]
					cells = append(cells, cellText(metric.get(tc), tc.Err, 1))
				}
				cells = append(cells, pairRatio(row.Cells[subjectName], row.Cells[baselineName], metric.get))
				if haveBase {
					cells = append(cells, pairRatio(row.Cells[subjectName], row.Cells[baseName], metric.get))
				}
				t.row(cells...)
			}
		}
		b.WriteString("\n")
	}
	if len(res.Memory) > 0 {
		cols := columnsFor(res, RowMemory)
		memRatios := func(get func(*MemoryCell) Summary, s, n, base *MemoryCell) []string {
			out := []string{pairRatio(s, n, get)}
			if haveBase {
				out = append(out, pairRatio(s, base, get))
			}
			return out
		}
		memHead := func(first string) []string {
			h := append(append([]string{first}, cols...), ratioHead)
			if haveBase {
				h = append(h, baseHead)
			}
			return h
		}
		b.WriteString("## 4. Memory per idle proxied connection\n\n")
		b.WriteString("Each client connects, sends one byte, reads the echo (so the upstream TLS 1.3 session is up) and stays idle; KiB/conn = (RSS with N held − RSS before) ÷ N, RSS = VmRSS summed over the proxy's processes (NGINX: master + workers).\n\n")
		fmt.Fprintf(&b, "![RSS per idle connection](%s)\n\n", MemoryChart)
		t := newTable(&b, memHead("held connections")...)
		for _, row := range res.Memory {
			cells := []string{fmt.Sprint(row.Held)}
			for _, c := range cols {
				mc := row.Cells[c]
				cells = append(cells, cellText(mc.KiBPerConn, mc.Err, 1))
			}
			t.row(append(cells, memRatios(func(c *MemoryCell) Summary { return c.KiBPerConn }, row.Cells[subjectName], row.Cells[baselineName], row.Cells[baseName])...)...)
		}
		b.WriteString("\n### Idle CPU (% of one core) while the connections are held and nothing moves\n\n")
		b.WriteString("Sampled over 2 s (1 s in a quick run) after the RSS reading, from the run time of the proxy's threads (/proc/PID/task/TID/schedstat, in ns); \"none held\" is the proxy after its warm-up, before the first connection is held. Timers and polling show here.\n\n")
		t = newTable(&b, memHead("held connections")...)
		first := res.Memory[0]
		cells := []string{"none held"}
		for _, c := range cols {
			mc := first.Cells[c]
			cells = append(cells, pctText(mc.BaselineIdleCPUPct, mc.Err))
		}
		t.row(append(cells, memRatios(func(c *MemoryCell) Summary { return c.BaselineIdleCPUPct }, first.Cells[subjectName], first.Cells[baselineName], first.Cells[baseName])...)...)
		for _, row := range res.Memory {
			cells := []string{fmt.Sprint(row.Held)}
			for _, c := range cols {
				mc := row.Cells[c]
				cells = append(cells, pctText(mc.IdleCPUPct, mc.Err))
			}
			t.row(append(cells, memRatios(func(c *MemoryCell) Summary { return c.IdleCPUPct }, row.Cells[subjectName], row.Cells[baselineName], row.Cells[baseName])...)...)
		}
		last := res.Memory[len(res.Memory)-1]
		settle := 3.0
		if res.Quick {
			settle = 1
		}
		b.WriteString("\n### Resident memory after bursts (MiB)\n\n")
		fmt.Fprintf(&b, "*After new connections*: RSS after the memory round's warm-up (%d clients making new connections for 10 s) and 2 s of quiet, before any connection is held. *After %d closed*: RSS %s after the %d held connections closed at once.\n\n",
			res.LoadWorkers, last.Held, fmtSeconds(settle), last.Held)
		t = newTable(&b, memHead("RSS")...)
		for _, m := range []struct {
			name string
			row  MemoryRow
			get  func(*MemoryCell) Summary
		}{
			{"after new connections", first, func(c *MemoryCell) Summary { return c.BurstMiB }},
			{fmt.Sprintf("after %d closed", last.Held), last, func(c *MemoryCell) Summary { return c.ClosedMiB }},
		} {
			cells := []string{m.name}
			for _, c := range cols {
				mc := m.row.Cells[c]
				cells = append(cells, cellText(m.get(mc), mc.Err, 1))
			}
			t.row(append(cells, memRatios(m.get, m.row.Cells[subjectName], m.row.Cells[baselineName], m.row.Cells[baseName])...)...)
		}
		b.WriteString("\n")
	}
	b.WriteString(rateMarkdown(res))
	if len(res.Crypto) > 0 {
		b.WriteString("## 5. Reference limits of this CPU (one core)\n\n")
		b.WriteString("Go's primitives timed with `testing.Benchmark`, OpenSSL's with `openssl speed -seconds 1 rsa2048 ecdsap256 ecdhx25519` (it times the X25519 derivation only; key generation is counted at the same cost).\n\n")
		ssl := map[string]CryptoRef{}
		for _, c := range res.OpenSSLCrypto {
			ssl[c.Name] = c
		}
		t := newTable(&b, "operation", "Go µs/op", "OpenSSL µs/op", "Go MiB/s")
		for _, c := range res.Crypto {
			mb, o := "", "–"
			if c.MiBps > 0 {
				mb = num(c.MiBps)
			}
			if sc, ok := ssl[c.Name]; ok {
				o = num(sc.Micros())
			}
			t.row(c.Name, num(c.Micros()), o, mb)
		}
		b.WriteString("\nThe crypto floor of each handshake kind is what the proxy (the TLS client) must at least compute, from these speeds; hashing and key derivation are left out, so it is a lower bound. A proxy that caches the chains it has verified (tlsrelay does) checks only the server's handshake signature on a full handshake: the \"chain cached\" floor.\n\n")
		t = newTable(&b, "handshake", "Go floor µs", "Go, chain cached µs", "OpenSSL floor µs", "counted")
		for _, k := range HandshakeKinds() {
			f := CryptoFloor(k, res.Crypto)
			o := "–"
			if len(res.OpenSSLCrypto) > 0 && !(k.Resumed && k.Version == tls.VersionTLS12) {
				o = num(CryptoFloor(k, res.OpenSSLCrypto).Micros)
			}
			t.row(k.String(), num(f.Micros), num(f.CachedMicros), o, f.Ops)
		}
		b.WriteString("\nThe OpenSSL floor is the one that applies to NGINX and HAProxy (OpenSSL re-verifies the chain on every full handshake); the Go floors to tlsrelay. A resumed TLS 1.2 handshake needs symmetric crypto only, a fraction of a microsecond in either library.\n\n")
	}
	var notes []string
	notes = append(notes, res.Notes...)
	notes = append(notes, resumptionNotes(res)...)
	notes = append(notes, errorNotes(res)...)
	if strings.Contains(b.String(), " †") {
		notes = append(notes, "† some rounds of this cell failed; the value is over the rounds that succeeded (bench/results.json has each round's error).")
	}
	if len(notes) > 0 {
		b.WriteString("## Notes\n\n")
		for _, n := range notes {
			b.WriteString("- " + n + "\n")
		}
		b.WriteString("\n")
	}
	b.WriteString("Raw numbers, per round: [bench/results.json](bench/results.json).\n")
	return b.String()
}

// pctText renders a summary with two decimals, for idle CPU percentages
// (measured to the nanosecond, and the interesting ones are below 1 %).
func pctText(s Summary, err string) string {
	if !s.Valid() {
		return cellText(s, err, 1)
	}
	out := fmt.Sprintf("%.2f", s.Median)
	if s.N > 1 && s.Min != s.Max {
		out += fmt.Sprintf(" (%.2f–%.2f)", s.Min, s.Max)
	}
	if err != "" {
		out += " †"
	}
	return out
}

// percentText renders a fraction summary as percentages.
func percentText(s Summary, err string) string {
	if !s.Valid() {
		return cellText(s, err, 1)
	}
	p := func(v float64) string { return fmt.Sprintf("%.0f%%", 100*v) }
	out := p(s.Median)
	if s.N > 1 && s.Min != s.Max {
		out += " (" + p(s.Min) + "–" + p(s.Max) + ")"
	}
	if err != "" {
		out += " †"
	}
	return out
}

func handshakeRatio(row HandshakeRow, get func(*HandshakeCell) Summary) string {
	s, n := row.Cells[subjectName], row.Cells[baselineName]
	if s == nil || n == nil {
		return "–"
	}
	return ratioText(get(s), get(n))
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

func fmtSeconds(s float64) string {
	if s < 60 {
		return fmt.Sprintf("%.1f s", s)
	}
	return fmt.Sprintf("%d min %02d s", int(s)/60, int(s)%60)
}
