package bench

// The prose around BENCHMARKS.md's tables: the ratios "At a glance"
// quotes, and the notes on errors and resumption under them.

import (
	"fmt"
	"math"
	"strings"
)

// cpuRatios returns "row ratio×" for each handshake row where both the
// column name and the column against have a CPU figure.
func cpuRatios(res *Results, name, against string) []string {
	var parts []string
	for _, row := range res.Handshake {
		s, n := row.Cells[name], row.Cells[against]
		if s == nil || n == nil {
			continue
		}
		if r := Ratio(s.CPUMicros, n.CPUMicros); !math.IsNaN(r) {
			parts = append(parts, fmt.Sprintf("%s %.2f×", row.Name, r))
		}
	}
	return parts
}

// atAGlance summarises the tlsrelay/NGINX ratios of the run in a few
// lines; it is empty without both proxies.
func atAGlance(res *Results) []string {
	cols := columns(res)
	if !hasColumn(cols, subjectName) || !hasColumn(cols, baselineName) {
		return nil
	}
	var out []string
	if parts := cpuRatios(res, subjectName, baselineName); len(parts) > 0 {
		out = append(out, "Proxy CPU per new connection, tlsrelay/NGINX (lower is better for tlsrelay): "+strings.Join(parts, "; ")+".")
	}
	if base, ok := baselineColumn(res); ok {
		if parts := cpuRatios(res, subjectName, base); len(parts) > 0 {
			out = append(out, "Proxy CPU per new connection, tlsrelay/"+base+" (this build against the earlier one, same run): "+strings.Join(parts, "; ")+".")
		}
	}
	// The other builds of tlsrelay, on the rows they were measured in.
	for _, p := range res.Peers {
		if !p.Available || !(p.HandshakeOnly || p.Baseline) {
			continue
		}
		if parts := cpuRatios(res, p.Name, baselineName); len(parts) > 0 {
			out = append(out, "Proxy CPU per new connection, "+p.Name+"/NGINX: "+strings.Join(parts, "; ")+".")
		}
	}
	for _, row := range res.Throughput {
		s, n := row.Cells[subjectName], row.Cells[baselineName]
		if s == nil || n == nil {
			continue
		}
		if r := Ratio(s.MiBps, n.MiBps); !math.IsNaN(r) {
			out = append(out, fmt.Sprintf("Throughput with %d connection(s)%s: tlsrelay %s MiB/s, NGINX %s MiB/s (%.2f×); CPU per GiB %.2f×.",
				row.Conns, row.suffix(), num(s.MiBps.Median), num(n.MiBps.Median), r, Ratio(s.CPUSecPerGiB, n.CPUSecPerGiB)))
		}
	}
	if len(res.Memory) > 0 && res.Memory[len(res.Memory)-1].Cells[subjectName] != nil && res.Memory[len(res.Memory)-1].Cells[baselineName] != nil {
		row := res.Memory[len(res.Memory)-1]
		s, n := row.Cells[subjectName], row.Cells[baselineName]
		if r := Ratio(s.KiBPerConn, n.KiBPerConn); !math.IsNaN(r) {
			out = append(out, fmt.Sprintf("Memory per idle proxied connection at %d held: tlsrelay %s KiB, NGINX %s KiB (%.2f×).",
				row.Held, num(s.KiBPerConn.Median), num(n.KiBPerConn.Median), r))
		}
		if s.IdleCPUPct.Valid() && n.IdleCPUPct.Valid() {
			out = append(out, fmt.Sprintf("Idle CPU with %d connections held: tlsrelay %.2f%%, NGINX %.2f%% of one core.",
				row.Held, s.IdleCPUPct.Median, n.IdleCPUPct.Median))
		}
	}
	out = append(out, rateGlance(res)...)
	lowest := func(name string) (float64, bool) {
		low, ok := 2.0, false
		for _, row := range res.Handshake {
			if c := row.Cells[name]; row.Kind.Resumed && c != nil && c.HitRate.Valid() {
				low, ok = math.Min(low, c.HitRate.Min), true
			}
		}
		return low, ok
	}
	if a, ok := lowest(subjectName); ok {
		if b, ok := lowest(baselineName); ok {
			out = append(out, fmt.Sprintf("Upstream resumption with reuse on, lowest round over all kinds: tlsrelay %.0f%%, NGINX %.0f%%.", 100*a, 100*b))
		}
	}
	return out
}

// errorNotes reports client connections that failed and upstream
// handshakes that failed in rounds that still counted.
func errorNotes(res *Results) []string {
	var out []string
	for _, row := range res.Handshake {
		for _, c := range columnsFor(res, RowHandshake) {
			hc := row.Cells[c]
			if hc == nil {
				continue
			}
			var failed, total int
			var upErr int64
			for _, rd := range hc.Rounds {
				if rd.Err == "" {
					failed += rd.Errors
					total += rd.Conns + rd.Errors
					upErr += rd.UpstreamErrors
				}
			}
			if failed > 0 {
				out = append(out, fmt.Sprintf("%s: %d of %d client connections failed in \"%s\" (rounds with more than 1%% failures count as failed).", c, failed, total, row.Name))
			}
			if upErr > 0 {
				out = append(out, fmt.Sprintf("%s: the upstreams saw %d failed handshakes in \"%s\".", c, upErr, row.Name))
			}
		}
	}
	return out
}

// resumptionNotes points out proxies that resumed few upstream handshakes
// with reuse on, or resumed any with reuse off.
func resumptionNotes(res *Results) []string {
	var out []string
	for _, row := range res.Handshake {
		for _, c := range columnsFor(res, RowHandshake) {
			hc := row.Cells[c]
			if hc == nil || !hc.HitRate.Valid() {
				continue
			}
			switch {
			case row.Kind.Resumed && hc.HitRate.Median < 0.9:
				out = append(out, fmt.Sprintf("%s resumed only %.0f%% of the upstream handshakes in \"%s\" (session reuse on); its CPU per connection there mixes full and resumed handshakes.",
					c, 100*hc.HitRate.Median, row.Name))
			case !row.Kind.Resumed && hc.HitRate.Max > 0:
				out = append(out, fmt.Sprintf("%s resumed %.0f%% of the upstream handshakes in \"%s\" although session reuse was off.",
					c, 100*hc.HitRate.Max, row.Name))
			}
		}
	}
	return out
}
