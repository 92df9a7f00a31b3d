package bench

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/pki"
)

// The pre-warm row: the latency of connect + first echo of new client
// connections, TLS 1.3 with resumption, through tlsrelay without and with
// proxy_ssl_prewarm, beside the other proxies. Clients come one at a time,
// paced (one connection every PrewarmInterval), not as fast as possible: a
// pre-warmed pool serves connections that arrive slower than it refills,
// and a saturating load would measure the refill, not the saving.

// DefaultPrewarm is the proxy_ssl_prewarm value of the row's pre-warmed
// column.
const DefaultPrewarm = 4

// PrewarmRow is the pre-warm row's result.
type PrewarmRow struct {
	// Name describes the load, e.g. "TLS1.3 ecdsa-p256 resumed, one
	// client every 10 ms".
	Name string `json:"name"`
	// Prewarm is the proxy_ssl_prewarm value of the pre-warmed column.
	Prewarm int `json:"prewarm"`
	// Conns is the number of connections per round; IntervalMillis the
	// pace.
	Conns          int     `json:"conns"`
	IntervalMillis float64 `json:"interval_ms"`
	// Columns are the column names in order: each proxy, and after
	// tlsrelay the pre-warmed tlsrelay (PrewarmColumn).
	Columns []string `json:"columns"`
	// Cells by column name.
	Cells map[string]*LatencyCell `json:"cells"`
}

// LatencyCell is one column's latency result.
type LatencyCell struct {
	Err       string         `json:"error,omitempty"`
	P50Millis Summary        `json:"p50_ms"`
	P99Millis Summary        `json:"p99_ms"`
	HitRate   Summary        `json:"resumed_fraction"`
	Rounds    []LatencyRound `json:"rounds"`
}

// LatencyRound is one paced round through one column.
type LatencyRound struct {
	Err       string  `json:"error,omitempty"`
	Conns     int     `json:"conns"`
	Errors    int     `json:"errors"`
	P50Millis float64 `json:"p50_ms"`
	P99Millis float64 `json:"p99_ms"`
	// Handshakes and Resumed are what the upstreams saw during the
	// round (with pre-warming: the refills).
	Handshakes int64   `json:"upstream_handshakes"`
	Resumed    int64   `json:"upstream_resumed"`
	HitRate    float64 `json:"resumed_fraction"`
}

// PrewarmColumn is the column name of tlsrelay with proxy_ssl_prewarm n.
func PrewarmColumn(n int) string { return fmt.Sprintf("%s prewarm %d", subjectName, n) }

// prewarmVariant is one column: a peer and its proxy_ssl_prewarm.
type prewarmVariant struct {
	column  string
	peer    Peer
	prewarm int
}

// prewarmVariants returns the columns of the row: every peer, and after
// tlsrelay the pre-warmed tlsrelay.
func (r *runner) prewarmVariants() []prewarmVariant {
	var out []prewarmVariant
	for _, p := range r.o.Peers {
		out = append(out, prewarmVariant{column: p.Name(), peer: p})
		if p.Name() == subjectName {
			out = append(out, prewarmVariant{column: PrewarmColumn(r.o.Prewarm), peer: p, prewarm: r.o.Prewarm})
		}
	}
	return out
}

// prewarmLoad returns the row's connections per round and pace, from the
// options or their defaults (400 connections, quick 100, one every 10 ms).
func (o *Options) prewarmLoad() (int, time.Duration) {
	n, every := o.PrewarmConns, o.PrewarmInterval
	if n <= 0 {
		n = 400
		if o.Quick {
			n = 100
		}
	}
	if every <= 0 {
		every = 10 * time.Millisecond
	}
	return n, every
}

// prewarm measures the pre-warm row.
func (r *runner) prewarm() error {
	b, err := r.backends(pki.ECDSAP256, "echo", 0)
	if err != nil {
		return fmt.Errorf("starting backends for the pre-warm row: %w", err)
	}
	defer b.Close()
	conns, every := r.o.prewarmLoad()
	k := HandshakeKind{Version: tls.VersionTLS13, Key: pki.ECDSAP256, Resumed: true}
	row := PrewarmRow{
		Name:    fmt.Sprintf("%s, one client every %s", k, every),
		Prewarm: r.o.Prewarm, Conns: conns, IntervalMillis: float64(every) / 1e6,
		Cells: map[string]*LatencyCell{},
	}
	vs := r.prewarmVariants()
	for _, v := range vs {
		row.Columns = append(row.Columns, v.column)
		row.Cells[v.column] = &LatencyCell{}
	}
	for i := 0; i < r.o.Rounds; i++ {
		for _, v := range order(vs, i) {
			if err := r.ctx.Err(); err != nil {
				return err
			}
			label := fmt.Sprintf("pre-warm %s · %s · round %d/%d", k, v.column, i+1, r.o.Rounds)
			r.o.Step(label, false, "")
			lr := r.prewarmRound(v, b, conns, every)
			cell := row.Cells[v.column]
			cell.Rounds = append(cell.Rounds, lr)
			if lr.Err != "" {
				r.o.Step(label, true, "error: "+lr.Err)
			} else {
				r.o.Step(label, true, fmt.Sprintf("p50 %.2f ms, p99 %.2f ms, resumed %.0f%%", lr.P50Millis, lr.P99Millis, 100*lr.HitRate))
			}
		}
	}
	for _, c := range row.Cells {
		c.summarize()
	}
	r.res.Prewarm = append(r.res.Prewarm, row)
	return nil
}

func (c *LatencyCell) summarize() {
	var p50, p99, hit []float64
	var errs []string
	for _, rd := range c.Rounds {
		if rd.Err != "" {
			errs = append(errs, rd.Err)
			continue
		}
		p50 = append(p50, rd.P50Millis)
		p99 = append(p99, rd.P99Millis)
		if rd.Handshakes > 0 {
			hit = append(hit, rd.HitRate)
		}
	}
	c.P50Millis, c.P99Millis, c.HitRate = Summarize(p50), Summarize(p99), Summarize(hit)
	c.Err = cellError(errs, len(c.Rounds))
}

// prewarmRound starts v's proxy, warms it up (tickets for every upstream),
// waits for the pre-warmed pool to fill (the upstreams hold prewarm
// connections per upstream and nothing else), then runs the paced load.
func (r *runner) prewarmRound(v prewarmVariant, b Backends, conns int, every time.Duration) LatencyRound {
	var lr LatencyRound
	spec, err := r.spec(v.peer, pki.ECDSAP256, tls.VersionTLS13, true, b.Addrs())
	if err != nil {
		lr.Err = err.Error()
		return lr
	}
	spec.Prewarm = v.prewarm
	in, err := r.startWarmed(v.peer, spec, v.column)
	if err != nil {
		lr.Err = err.Error()
		return lr
	}
	defer in.Stop()
	want := int64(v.prewarm * len(b.Addrs()))
	if err := settle(r.ctx, b, want, 10*time.Second); err != nil {
		lr.Err = err.Error()
		return lr
	}
	st0, err0 := b.Stats()
	res := RunPacedLoad(r.ctx, spec.Listen, conns, every, 5*time.Second)
	st1, err1 := b.Stats()
	for _, err := range []error{err0, err1} {
		if err != nil {
			lr.Err = err.Error()
			return lr
		}
	}
	lr.Conns, lr.Errors = res.Conns, res.Errors
	if res.Conns == 0 {
		lr.Err = fmt.Sprintf("no connection completed: %v", res.FirstErr)
		return lr
	}
	if res.Errors*100 > res.Conns+res.Errors {
		lr.Err = fmt.Sprintf("%d of %d connections failed: %v", res.Errors, res.Conns+res.Errors, res.FirstErr)
		return lr
	}
	lr.P50Millis = float64(Percentile(res.Latencies, 50)) / 1e6
	lr.P99Millis = float64(Percentile(res.Latencies, 99)) / 1e6
	lr.Handshakes, lr.Resumed = st1.Handshakes-st0.Handshakes, st1.Resumed-st0.Resumed
	if lr.Handshakes > 0 {
		lr.HitRate = float64(lr.Resumed) / float64(lr.Handshakes)
	}
	return lr
}

// settle waits until the upstreams hold exactly want connections (0: the
// proxy closed every session; with pre-warming, its pool is full), polling
// their counters, at most limit.
func settle(ctx context.Context, b Backends, want int64, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		st, err := b.Stats()
		if err != nil {
			return err
		}
		if st.Active == want {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the upstreams hold %d connections after %s, want %d", st.Active, limit, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// RunPacedLoad makes n connections to addr one after the other, starting
// one every interval (or as soon as the previous one ended, when it took
// longer): each connects, writes 16 bytes, reads the echo and closes.
func RunPacedLoad(ctx context.Context, addr string, n int, interval, timeout time.Duration) ConnResult {
	var res ConnResult
	msg, buf := make([]byte, 16), make([]byte, 16)
	t := time.NewTicker(interval)
	defer t.Stop()
	t0 := time.Now()
	for i := 0; i < n && ctx.Err() == nil; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
			case <-t.C:
			}
		}
		start := time.Now()
		if err := echoOnce(addr, msg, buf, timeout); err != nil {
			res.Errors++
			if res.FirstErr == nil {
				res.FirstErr = err
			}
			continue
		}
		res.Conns++
		res.Latencies = append(res.Latencies, time.Since(start))
	}
	res.Elapsed = time.Since(t0)
	return res
}

// prewarmMarkdown renders the pre-warm row ("" without it).
func prewarmMarkdown(res *Results) string {
	if len(res.Prewarm) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("## Pre-warmed upstream connections (`proxy_ssl_prewarm`)\n\n")
	row0 := res.Prewarm[0]
	fmt.Fprintf(&b, "Latency of connect + first echo, p50 / p99 (ms), for %d new client connections per round made one at a time, one every %s ms, TLS 1.3 upstream with resumption on (after a warm-up, so every upstream has a ticket), mutual TLS, ECDSA P-256. *%s* keeps %d handshaken connections per upstream ready (`proxy_ssl_prewarm %d`), so a client pays neither the upstream connect nor the handshake; the other columns dial per client. Ratios divide by %s.\n\n",
		row0.Conns, num(row0.IntervalMillis), PrewarmColumn(row0.Prewarm), row0.Prewarm, row0.Prewarm, baselineName)
	for _, row := range res.Prewarm {
		var cols []string
		for _, c := range row.Columns {
			if available(res, c) {
				cols = append(cols, c)
			}
		}
		pw := PrewarmColumn(row.Prewarm)
		head := append([]string{"load"}, cols...)
		head = append(head, subjectName+"/"+baselineName+" p50", pw+"/"+baselineName+" p50", "p99")
		t := newTable(&b, head...)
		cells := []string{row.Name}
		for _, c := range cols {
			lc := row.Cells[c]
			if !lc.P50Millis.Valid() {
				cells = append(cells, cellText(Summary{}, lc.Err, 1))
				continue
			}
			cells = append(cells, num(lc.P50Millis.Median)+" / "+num(lc.P99Millis.Median))
		}
		ratio := func(a string, get func(*LatencyCell) Summary) string {
			x, y := row.Cells[a], row.Cells[baselineName]
			if x == nil || y == nil {
				return "–"
			}
			return ratioText(get(x), get(y))
		}
		p50 := func(c *LatencyCell) Summary { return c.P50Millis }
		p99 := func(c *LatencyCell) Summary { return c.P99Millis }
		cells = append(cells, ratio(subjectName, p50), ratio(pw, p50), ratio(pw, p99))
		t.row(cells...)
	}
	b.WriteString("\n")
	return b.String()
}

// available reports whether column c is shown: a proxy that ran, or the
// pre-warmed tlsrelay when tlsrelay ran.
func available(res *Results, c string) bool {
	cols := columns(res)
	if hasColumn(cols, c) {
		return true
	}
	return strings.HasPrefix(c, subjectName+" prewarm ") && hasColumn(cols, subjectName)
}
