package bench

// The SVG bar charts BENCHMARKS.md embeds: handshake CPU and memory per
// connection, one bar per proxy.

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// barGroup is one group of bars in a chart: one bar per proxy, and an
// optional marker (the crypto floor).
type barGroup struct {
	label  string
	values map[string]float64 // NaN or missing: no value
	marker float64            // NaN: none
}

var chartColors = []string{"#2f6db5", "#d9822b", "#3c9a5f", "#8e5ab5"}

// barChart renders horizontal grouped bars as a standalone SVG.
func barChart(title, unit, markerName string, peers []string, groups []barGroup) string {
	const (
		left, barW, right = 200.0, 520.0, 150.0
		barH, gap, top    = 14.0, 12.0, 56.0
	)
	max := 0.0
	for _, g := range groups {
		for _, v := range g.values {
			if !math.IsNaN(v) && v > max {
				max = v
			}
		}
		if !math.IsNaN(g.marker) && g.marker > max {
			max = g.marker
		}
	}
	if max == 0 {
		max = 1
	}
	height := top + float64(len(groups))*(float64(len(peers))*barH+gap) + 20
	width := left + barW + right
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="11">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="10" y="18" font-size="14" font-weight="bold">%s</text>`+"\n", html.EscapeString(title))
	x := 10.0
	for i, p := range peers {
		fmt.Fprintf(&b, `<rect x="%.0f" y="28" width="12" height="12" fill="%s"/><text x="%.0f" y="38">%s</text>`+"\n", x, chartColors[i%len(chartColors)], x+16, html.EscapeString(p))
		x += 24 + 7*float64(len(p))
	}
	if markerName != "" {
		fmt.Fprintf(&b, `<line x1="%.0f" y1="26" x2="%.0f" y2="42" stroke="black" stroke-width="2"/><text x="%.0f" y="38">%s</text>`+"\n", x, x, x+6, html.EscapeString(markerName))
	}
	y := top
	for _, g := range groups {
		gh := float64(len(peers)) * barH
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end">%s</text>`+"\n", left-8, y+gh/2+4, html.EscapeString(g.label))
		for i, p := range peers {
			v, ok := g.values[p]
			by := y + float64(i)*barH
			if !ok || math.IsNaN(v) {
				fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" fill="#888">%s: n/a</text>`+"\n", left+4, by+barH-3, html.EscapeString(p))
				continue
			}
			w := v / max * barW
			fmt.Fprintf(&b, `<rect x="%.0f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %s %s</title></rect>`+"\n",
				left, by+1, w, barH-2, chartColors[i%len(chartColors)], html.EscapeString(g.label), html.EscapeString(p), num(v), html.EscapeString(unit))
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">%s %s</text>`+"\n", left+w+4, by+barH-3, num(v), html.EscapeString(unit))
		}
		if !math.IsNaN(g.marker) {
			mx := left + g.marker/max*barW
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black" stroke-width="2"><title>%s: %s %s</title></line>`+"\n",
				mx, y-2, mx, y+gh+2, html.EscapeString(markerName), num(g.marker), html.EscapeString(unit))
		}
		y += gh + gap
	}
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#444"/>`+"\n", left, top-4, left, y-gap+4)
	b.WriteString("</svg>\n")
	return b.String()
}

// HandshakeSVG charts the proxy CPU per new connection of each handshake
// kind per proxy, with the crypto floor marked.
func HandshakeSVG(res *Results) string {
	cols := columns(res)
	var groups []barGroup
	for _, row := range res.Handshake {
		g := barGroup{label: row.Name, values: map[string]float64{}, marker: math.NaN()}
		if row.Floor != nil {
			g.marker = row.Floor.CachedMicros
		}
		for _, c := range cols {
			if hc := row.Cells[c]; hc != nil && hc.CPUMicros.Valid() {
				g.values[c] = hc.CPUMicros.Median
			}
		}
		groups = append(groups, g)
	}
	return barChart("Proxy CPU per new client connection (median µs)", "µs", "crypto floor (Go, verified chains cached)", cols, groups)
}

// MemorySVG charts the RSS per idle proxied connection per proxy.
func MemorySVG(res *Results) string {
	cols := columns(res)
	var groups []barGroup
	for _, row := range res.Memory {
		g := barGroup{label: fmt.Sprintf("%d idle connections", row.Held), values: map[string]float64{}, marker: math.NaN()}
		for _, c := range cols {
			if mc := row.Cells[c]; mc != nil && mc.KiBPerConn.Valid() {
				g.values[c] = mc.KiBPerConn.Median
			}
		}
		groups = append(groups, g)
	}
	return barChart("RSS per idle proxied connection (median KiB)", "KiB", "", cols, groups)
}
