package bench

// The sustained-rate row in BENCHMARKS.md: its table, its per-second
// series and its chart (bench/sustained-rate.svg).

import (
	"cmp"
	"fmt"
	"html"
	"math"
	"slices"
	"strings"
)

// RateChart is the sustained-rate row's chart, relative to the output
// directory.
const RateChart = "bench/sustained-rate.svg"

// rateDoc is the section of docs/operations.md the row illustrates.
const rateDoc = "docs/operations.md#load-harnesses-new-connections-at-a-sustained-rate"

// rateGroup is one (proxy, kind) pair of the row over its rounds.
type rateGroup struct {
	proxy, kind string
	// ok are the rounds that measured, in the order they ran; errs the
	// errors of the rounds that could not.
	ok   []RatePair
	errs []string
}

// rateGroups gathers the row's pairs by (proxy, kind), in the order the
// first round ran them.
func rateGroups(row *RateRow) []*rateGroup {
	var out []*rateGroup
	by := map[[2]string]*rateGroup{}
	for _, p := range row.Pairs {
		k := [2]string{p.Proxy, p.Kind}
		g := by[k]
		if g == nil {
			g = &rateGroup{proxy: p.Proxy, kind: p.Kind}
			by[k] = g
			out = append(out, g)
		}
		if p.Err != "" {
			g.errs = append(g.errs, p.Err)
		} else {
			g.ok = append(g.ok, p)
		}
	}
	return out
}

// perSec summarizes the completed connections per second over the rounds
// that measured.
func (g *rateGroup) perSec() Summary {
	xs := make([]float64, len(g.ok))
	for i, p := range g.ok {
		xs[i] = p.ConnsPerSec
	}
	return Summarize(xs)
}

// rateBaseline returns NGINX's connections/s by upstream closing kind,
// for the ratios.
func rateBaseline(groups []*rateGroup) map[string]Summary {
	out := map[string]Summary{}
	for _, g := range groups {
		if g.proxy == baselineName && len(g.ok) > 0 {
			out[g.kind] = g.perSec()
		}
	}
	return out
}

// rounds is how many rounds the row ran: the last pair's round (1 for
// results written before rounds, and for a run cancelled in its first).
func (r *RateRow) rounds() int {
	n := 1
	for _, p := range r.Pairs {
		n = max(n, p.Round)
	}
	return n
}

// failing returns the rounds with a failed connection.
func (g *rateGroup) failing() []RatePair {
	var out []RatePair
	for _, p := range g.ok {
		if p.FirstFailure != nil {
			out = append(out, p)
		}
	}
	return out
}

// firstFailureText renders when the group's first failure came: "none",
// or the median second over the rounds that failed and how many did
// ("0.3 s (0.2–0.4), 5 of 5 rounds").
func (g *rateGroup) firstFailureText() string {
	f := g.failing()
	if len(f) == 0 {
		return "none"
	}
	at := make([]float64, len(f))
	for i, p := range f {
		at[i] = *p.FirstFailure
	}
	sum := Summarize(at)
	text := fmt.Sprintf("%.1f s", sum.Median)
	if lo, hi := fmt.Sprintf("%.1f", sum.Min), fmt.Sprintf("%.1f", sum.Max); lo != hi {
		text = fmt.Sprintf("%.1f s (%s–%s)", sum.Median, lo, hi)
	}
	if len(g.ok) > 1 {
		text += fmt.Sprintf(", %d of %d rounds", len(f), len(g.ok))
	}
	return text
}

// keyExchanges renders the key exchange groups the upstream saw over the
// rounds, distinct, in order ("–" for none).
func (g *rateGroup) keyExchanges() string {
	var seen []string
	for _, p := range g.ok {
		if p.Group != "" && !slices.Contains(seen, p.Group) {
			seen = append(seen, p.Group)
		}
	}
	if len(seen) == 0 {
		return "–"
	}
	return strings.Join(seen, ", ")
}

// median returns the round whose connections/s is the median (the lower
// middle one of an even count): the one the chart draws.
func (g *rateGroup) median() RatePair {
	v := slices.Clone(g.ok)
	slices.SortStableFunc(v, func(a, b RatePair) int { return cmp.Compare(a.ConnsPerSec, b.ConnsPerSec) })
	return v[(len(v)-1)/2]
}

// rateMarkdown renders the sustained-rate row ("" without it).
func rateMarkdown(res *Results) string {
	row := res.Rate
	if row == nil {
		return ""
	}
	var b strings.Builder
	b.WriteString("## New connections at a sustained rate (TIME_WAIT)\n\n")
	if row.Skipped != "" {
		why := strings.TrimSuffix(row.Skipped, ".")
		fmt.Fprintf(&b, "%s%s.\n\n", strings.ToUpper(why[:1]), why[1:])
		return b.String()
	}
	fmt.Fprintf(&b, "Each pair of proxy and upstream runs in a network namespace of its own with `net.ipv4.tcp_tw_reuse = 0`, as on a real network (the host loopback's default lets `connect()` reuse a port in TIME_WAIT and hides this), and %s ephemeral ports (`ip_local_port_range %d %d`); the clients' source addresses rotate over %s loopback addresses, so the client leg never runs short. ",
		thousands(row.PortHigh-row.PortLow+1), row.PortLow, row.PortHigh, thousands(row.SourceAddrs))
	b.WriteString("Whichever side of an upstream connection sends the first FIN keeps its socket in TIME_WAIT for 60 s: a proxy that closes first can open only as many connections to one upstream address per minute as it has ports, then `connect()` fails with EADDRNOTAVAIL (`connect() failed (99: Cannot assign requested address)`). ")
	fmt.Fprintf(&b, "What a harness at thousands of connections per second needs: [docs/operations.md](%s).\n\n", rateDoc)
	fmt.Fprintf(&b, "%d clients each connect, send 16 bytes, read them back and close, as fast as they can for %s per pair (a failure: a dial error, a short read, other bytes, or 2 s without the echo). Every pair has a fresh namespace, proxy and upstream (a Go TLS 1.3 server that requires the proxy's client certificate), so no TIME_WAIT carries over. The proxies run with their defaults apart from listen, upstream, `proxy_ssl` with the client certificate, verification, `proxy_ssl_name`, TLS 1.3 and the other rows' key exchange groups (`proxy_ssl_conf_command Groups %s`: crypto/tls would otherwise offer the post-quantum X25519MLKEM768 first, which NGINX 1.22's OpenSSL cannot, and the proxies would not make the same handshake) (`worker_processes %d`). The upstream ends each connection after the echo in one of three ways: *%s*: at the proxy's close_notify it answers with close_notify and FIN; *%s*: it answers with a FIN alone; *%s*: it sends close_notify and FIN right after the echo, without waiting.\n\n",
		row.Workers, fmtSeconds(row.Seconds), Groups, res.Workers, RateCloseNotify, RateBareFIN, RateUpstreamFirst)
	fmt.Fprintf(&b, "![completed and failed connections per second](%s)\n\n", RateChart)
	rounds := row.rounds()
	t := newTable(&b, "proxy", "upstream closes", "connections", "failed", "connections/s", "/"+baselineName, "first failure", "TIME_WAIT at the end: proxy side / upstream side", "proxy log: EADDRNOTAVAIL", "key exchange")
	groups := rateGroups(row)
	base := rateBaseline(groups)
	for _, g := range groups {
		if len(g.ok) == 0 {
			t.row(g.proxy, g.kind, errorText(g.errs[0]), "", "", "", "", "", "", "")
			continue
		}
		perSec := g.perSec()
		ratio := "–"
		if b, ok := base[g.kind]; ok && g.proxy != baselineName {
			ratio = ratioText(perSec, b)
		}
		// The counts are the median round's, the one the chart draws: a
		// median of each count on its own would mix rounds.
		m := g.median()
		t.row(g.proxy, g.kind, fmt.Sprint(m.Conns), fmt.Sprint(m.Failed),
			cellText(perSec, cellError(g.errs, len(g.ok)+len(g.errs)), 1), ratio, g.firstFailureText(),
			fmt.Sprintf("%d / %d", m.TimeWaitProxy, m.TimeWaitUpstream), addrNotAvailText(m), g.keyExchanges())
	}
	fmt.Fprintf(&b, "\n%s *Connections/s* is completed connections over the load's length; */%s* is the proxy's median connections/s over %s's with the same upstream, in this run. *First failure* is the second of the load it came in, over the rounds with one. TIME_WAIT is counted in the namespace's `/proc/net/tcp` as the load ends; the proxy side is the proxy's end of its upstream connections. *Key exchange* is the group of the upstream's first handshake in each round (HAProxy's at OpenSSL's defaults, X25519 first). HAProxy, as configured here, logs no failed connect (–).\n\n",
		roundsText(rounds), baselineName, baselineName)
	b.WriteString("<details><summary>Per second: completed / failed connections</summary>\n\n```\n")
	for _, p := range row.Pairs {
		if p.Err != "" {
			continue
		}
		var cells []string
		for i := range p.OKPerSec {
			f := 0
			if i < len(p.FailedPerSec) {
				f = p.FailedPerSec[i]
			}
			cells = append(cells, fmt.Sprintf("%d/%d", p.OKPerSec[i], f))
		}
		label := p.Proxy + ", " + p.Kind
		if rounds > 1 {
			label += fmt.Sprintf(", round %d", max(p.Round, 1))
		}
		fmt.Fprintf(&b, "%-38s %s\n", label+":", strings.Join(cells, " "))
	}
	b.WriteString("```\n\n</details>\n\n")
	return b.String()
}

// addrNotAvailText renders the count of EADDRNOTAVAIL lines in the
// proxy's log, "–" for a proxy that logs no failed connect.
func addrNotAvailText(p RatePair) string {
	if p.AddrNotAvail == nil {
		return "–"
	}
	return fmt.Sprint(*p.AddrNotAvail)
}

// roundsText says what the cells are over n rounds.
func roundsText(n int) string {
	if n == 1 {
		return "One round per pair."
	}
	return fmt.Sprintf("Each pair ran in %d rounds, the proxies' order alternating: connections/s is the median with (min–max) over them; the counts are those of the pair's median round by connections/s, the one the chart draws.", n)
}

// rateGlance is the row's line in "At a glance": which closing kinds
// reached the wall, per proxy.
func rateGlance(res *Results) []string {
	if res.Rate == nil || len(res.Rate.Pairs) == 0 {
		return nil
	}
	groups := rateGroups(res.Rate)
	var parts []string
	for _, name := range []string{subjectName, baselineName} {
		var walled, measured []string
		for _, g := range groups {
			if g.proxy != name || len(g.ok) == 0 {
				continue
			}
			measured = append(measured, g.kind)
			if len(g.failing()) > 0 {
				walled = append(walled, fmt.Sprintf("%s (first at %s)", g.kind, g.firstFailureText()))
			}
		}
		switch {
		case len(measured) == 0:
			continue
		case len(walled) == 0:
			parts = append(parts, name+" none of "+fmt.Sprint(len(measured)))
		default:
			parts = append(parts, name+" "+strings.Join(walled, ", "))
		}
	}
	if len(parts) == 0 {
		return nil
	}
	var ratios []string
	base := rateBaseline(groups)
	for _, g := range groups {
		if b, ok := base[g.kind]; ok && g.proxy == subjectName && len(g.ok) > 0 {
			ratios = append(ratios, g.kind+" "+ratioText(g.perSec(), b))
		}
	}
	ratioLine := ""
	if len(ratios) > 0 {
		ratioLine = fmt.Sprintf("; connections/s %s/%s by upstream closing kind: %s", subjectName, baselineName, strings.Join(ratios, ", "))
	}
	ports := thousands(res.Rate.PortHigh - res.Rate.PortLow + 1)
	return []string{"New connections at a sustained rate with tcp_tw_reuse 0 and " + ports + " ports, upstream closing kinds whose connections failed: " + strings.Join(parts, "; ") + ratioLine + "."}
}

// thousands renders n with commas: 4,064.
func thousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten (1 for v ≤ 0).
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

// rateKindColor colours a line by its upstream closing kind.
func rateKindColor(kind string) string {
	switch kind {
	case RateCloseNotify:
		return "#2f6db5"
	case RateBareFIN:
		return "#c0392b"
	case RateUpstreamFirst:
		return "#3c9a5f"
	}
	return "#444"
}

// rateDash tells the i-th proxy's lines apart: solid, dashed, dotted,
// dash-dot.
func rateDash(i int) string {
	switch i % 4 {
	case 1:
		return ` stroke-dasharray="7 4"`
	case 2:
		return ` stroke-dasharray="2 3"`
	case 3:
		return ` stroke-dasharray="10 3 2 3"`
	}
	return ""
}

// RateSVG charts the sustained-rate row: completed connections per second
// in one panel and failed ones in another, a line per (proxy, kind).
func RateSVG(res *Results) string {
	const (
		width, left, right = 860.0, 70.0, 20.0
		panelH, gap        = 200.0, 50.0
	)
	var pairs []RatePair
	var proxies []string
	if res.Rate != nil {
		for _, g := range rateGroups(res.Rate) {
			if len(g.ok) == 0 {
				continue
			}
			pairs = append(pairs, g.median())
			if !hasColumn(proxies, g.proxy) {
				proxies = append(proxies, g.proxy)
			}
		}
	}
	var b strings.Builder
	title := "New connections per second through each proxy, tcp_tw_reuse 0"
	if r := res.Rate; r != nil && r.Skipped == "" {
		title += ", " + thousands(r.PortHigh-r.PortLow+1) + " ports"
		if r.rounds() > 1 {
			title += " (each line: its median round)"
		}
	}
	legendRows := (len(pairs) + 2) / 3
	top := 40 + 18*float64(legendRows) + 10
	height := top + 2*panelH + gap + 40
	if len(pairs) == 0 {
		height = 80
	}
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="11">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="10" y="18" font-size="14" font-weight="bold">%s</text>`+"\n", html.EscapeString(title))
	if len(pairs) == 0 {
		why := "no data: the sustained-rate row did not run"
		if res.Rate != nil && res.Rate.Skipped != "" {
			why = res.Rate.Skipped
		}
		fmt.Fprintf(&b, `<text x="10" y="50" fill="#888">%s</text>`+"\n</svg>\n", html.EscapeString(why))
		return b.String()
	}
	style := func(p RatePair) (string, string) {
		for i, name := range proxies {
			if name == p.Proxy {
				return rateKindColor(p.Kind), rateDash(i)
			}
		}
		return rateKindColor(p.Kind), ""
	}
	// The legend: a row per proxy, a column per kind.
	var legend []RatePair
	for _, name := range proxies {
		for _, k := range append(RateKinds(), "") {
			for _, p := range pairs {
				known := slices.Contains(RateKinds(), p.Kind)
				if p.Proxy == name && (p.Kind == k || k == "" && !known) {
					legend = append(legend, p)
				}
			}
		}
	}
	for i, p := range legend {
		x, y := 10+float64(i%3)*280, 34+18*float64(i/3)
		color, dash := style(p)
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="%s" stroke-width="2"%s/><text x="%.0f" y="%.0f">%s</text>`+"\n",
			x, y, x+30, y, color, dash, x+36, y+4, html.EscapeString(p.Proxy+" · upstream "+p.Kind))
	}
	secs := 1
	for _, p := range pairs {
		secs = max(secs, len(p.OKPerSec), len(p.FailedPerSec))
	}
	plotW := width - left - right
	for panel, pn := range []struct {
		name   string
		series func(RatePair) []int
	}{
		{"completed connections/s", func(p RatePair) []int { return p.OKPerSec }},
		{"failed connections/s", func(p RatePair) []int { return p.FailedPerSec }},
	} {
		y0 := top + float64(panel)*(panelH+gap)
		peak := 0
		for _, p := range pairs {
			for _, v := range pn.series(p) {
				peak = max(peak, v)
			}
		}
		ymax := niceCeil(float64(peak))
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" font-weight="bold">%s</text>`+"\n", left, y0-6, html.EscapeString(pn.name))
		for _, f := range []float64{0, 0.5, 1} {
			gy := y0 + panelH - f*panelH
			fmt.Fprintf(&b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#ddd"/><text x="%.0f" y="%.1f" text-anchor="end">%s</text>`+"\n",
				left, gy, left+plotW, gy, left-6, gy+4, thousands(int(f*ymax)))
		}
		step := 1
		if secs > 10 {
			step = 5
		}
		for s := 0; s <= secs; s += step {
			gx := left + float64(s)/float64(secs)*plotW
			fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%d s</text>`+"\n", gx, y0+panelH+14, s)
		}
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#444"/>`+"\n", left, y0, left, y0+panelH)
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#444"/>`+"\n", left, y0+panelH, left+plotW, y0+panelH)
		for _, p := range pairs {
			var pts []string
			for i, v := range pn.series(p) {
				// Each count is drawn at the middle of its second.
				px := left + (float64(i)+0.5)/float64(secs)*plotW
				py := y0 + panelH - float64(v)/ymax*panelH
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", px, py))
			}
			if len(pts) == 0 {
				continue
			}
			color, dash := style(p)
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"><title>%s · upstream %s</title></polyline>`+"\n",
				color, dash, strings.Join(pts, " "), html.EscapeString(p.Proxy), html.EscapeString(p.Kind))
		}
	}
	b.WriteString("</svg>\n")
	return b.String()
}
