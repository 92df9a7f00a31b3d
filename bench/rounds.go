package bench

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/netns"
	"github.com/tlsrelay/tlsrelay/internal/pki"
)

// Row groups a run can be limited to (Options.Only).
const (
	RowCrypto     = "crypto"
	RowMicro      = "micro"
	RowHandshake  = "handshake"
	RowPrewarm    = "prewarm"
	RowThroughput = "throughput"
	RowMemory     = "memory"
	// RowRate is the sustained rate of new connections (rate.go); it
	// needs root for its network namespaces.
	RowRate = "rate"
)

// AllRows lists the row groups in the order a run measures them.
var AllRows = []string{RowCrypto, RowMicro, RowHandshake, RowPrewarm, RowThroughput, RowMemory, RowRate}

// Options configure a run. Zero fields take the defaults their comments
// give; Quick changes several of them.
type Options struct {
	// Peers are the proxies, in column order. The first is the subject
	// (tlsrelay) and the second the baseline every ratio divides by
	// (NGINX). A peer that fails still gets its "n/a (error)" cells.
	Peers []Peer
	// HandshakePeers are measured in the handshake rows only, in columns
	// after Peers' (a second tlsrelay build).
	HandshakePeers []Peer
	// Baseline, when set, is an earlier build of tlsrelay (make bench
	// BASELINE=ref) measured in the handshake, throughput and memory rows,
	// in the same alternating rounds as Peers, in the last column; the
	// report divides tlsrelay's figures by its own there too.
	Baseline Peer
	// Dir is a scratch directory for certificates, configurations and
	// logs; it must exist.
	Dir string
	// Workers is worker_processes for tlsrelay and NGINX and nbthread for
	// HAProxy. Default 2.
	Workers int
	// Rounds per proxy and configuration. Default 3, quick 1.
	Rounds int
	// Quick shortens every round so that the whole run takes under two
	// minutes on two cores, plus under a minute for the sustained-rate
	// row (as root, three proxies).
	Quick bool
	// LoadWorkers is the number of concurrent clients in handshake rounds.
	// Default 16.
	LoadWorkers int
	// Only limits the run to these row groups; nil or empty means all.
	Only map[string]bool
	// HandshakeDuration bounds a handshake round. Default 2.5s, quick 0.8s.
	HandshakeDuration time.Duration
	// HandshakeMaxConns bounds a handshake round. Default 20000.
	HandshakeMaxConns int
	// StreamBytes is what the connection of the one-connection throughput
	// round moves; each connection of the 16-connection round moves a
	// quarter of it. Default 256 MiB (and 16 × 64 MiB), quick 64 MiB (and
	// 16 × 16 MiB).
	StreamBytes int64
	// Held are the numbers of idle connections the memory rounds hold, in
	// increasing order. Default 2000 and 9000.
	Held []int
	// OpenSSL is the openssl binary whose `openssl speed` gives the floor
	// of the OpenSSL-based proxies; "" skips it.
	OpenSSL string
	// Prewarm is tlsrelay's proxy_ssl_prewarm in the pre-warmed column of
	// the pre-warm row. Default DefaultPrewarm.
	Prewarm int
	// PrewarmConns and PrewarmInterval are the pre-warm row's paced load:
	// connections per round and the interval between them. Default 400
	// (quick 100) and 10ms.
	PrewarmConns    int
	PrewarmInterval time.Duration
	// Kinds are the handshake rows. Default AllKinds().
	Kinds []HandshakeKind
	// StartBackends starts the upstreams. Default StartLocalBackends.
	StartBackends func(BackendSpec) (Backends, error)
	// Step, if set, is called before each measured step with a label and
	// after it with the step's outcome (done true).
	Step func(label string, done bool, outcome string)
	// TotalSteps, if set, is told the number of steps before the first.
	TotalSteps func(n int)
	// RateDuration is the sustained-rate row's load per (proxy, kind)
	// pair. Default 20s, quick 5s.
	RateDuration time.Duration
	// RateChild is the command that runs one pair of the sustained-rate
	// row (RunRateChild); the spec file's path is appended. Default: this
	// executable with -rate-child, tlsrelay-bench's hidden flag.
	RateChild []string
	// RatePorts, if set, replaces the sustained-rate row's 1,024
	// ephemeral ports (from RatePortLow) by this many, so a short test
	// reaches the wall sooner.
	RatePorts int
}

func (o *Options) setDefaults() {
	if o.Workers <= 0 {
		o.Workers = 2
	}
	if o.Rounds <= 0 {
		o.Rounds = 3
		if o.Quick {
			o.Rounds = 1
		}
	}
	if o.LoadWorkers <= 0 {
		o.LoadWorkers = 16
	}
	if o.HandshakeDuration <= 0 {
		o.HandshakeDuration = 2500 * time.Millisecond
		if o.Quick {
			o.HandshakeDuration = 800 * time.Millisecond
		}
	}
	if o.HandshakeMaxConns <= 0 {
		o.HandshakeMaxConns = 20000
	}
	if o.StreamBytes <= 0 {
		o.StreamBytes = 256 << 20
		if o.Quick {
			o.StreamBytes = 64 << 20
		}
	}
	if len(o.Held) == 0 {
		o.Held = []int{2000, 9000}
	}
	if len(o.Kinds) == 0 {
		o.Kinds = AllKinds()
	}
	if o.Prewarm <= 0 {
		o.Prewarm = DefaultPrewarm
	}
	if o.StartBackends == nil {
		o.StartBackends = StartLocalBackends
	}
	if o.Step == nil {
		o.Step = func(string, bool, string) {}
	}
	if o.TotalSteps == nil {
		o.TotalSteps = func(int) {}
	}
}

func (o *Options) want(row string) bool { return len(o.Only) == 0 || o.Only[row] }

// runner holds the state of one run.
type runner struct {
	ctx      context.Context
	o        Options
	res      *Results
	material map[pki.KeyType]*Material
	// rateSkip says why the sustained-rate row cannot run (no network
	// namespaces); nil when it can or was not asked for.
	rateSkip error
}

// Run measures everything Options ask for and returns the results. It fails
// only when the harness itself cannot work (no certificates, no backends);
// a proxy that fails gets error cells.
func Run(ctx context.Context, o Options) (*Results, error) {
	o.setDefaults()
	r := &runner{ctx: ctx, o: o, material: map[pki.KeyType]*Material{}}
	r.res = &Results{
		Started: time.Now(), Machine: DescribeMachine(), Workers: o.Workers, Rounds: o.Rounds,
		Quick: o.Quick, LoadWorkers: o.LoadWorkers, HandshakeSeconds: o.HandshakeDuration.Seconds(),
		HandshakeMaxConns: o.HandshakeMaxConns,
	}
	if o.want(RowRate) {
		r.rateSkip = netns.Available()
	}
	o.TotalSteps(r.countSteps())
	for _, key := range []pki.KeyType{pki.ECDSAP256, pki.RSA2048} {
		m, err := WriteMaterial(o.Dir, key)
		if err != nil {
			return nil, err
		}
		r.material[key] = m
	}
	if o.want(RowCrypto) {
		refs, err := MeasureCrypto(func(name string) { o.Step("crypto: "+name, false, "") })
		if err != nil {
			return nil, err
		}
		r.res.Crypto = refs
		if o.OpenSSL != "" {
			o.Step("crypto: openssl speed rsa2048 ecdsap256 ecdhx25519", false, "")
			ssl, err := MeasureOpenSSL(o.OpenSSL)
			if err != nil {
				r.res.Notes = append(r.res.Notes, "No OpenSSL floor: "+err.Error())
			}
			r.res.OpenSSLCrypto = ssl
		}
	}
	if o.want(RowMicro) {
		micro, err := MeasureMicro(func(name string) { o.Step("Go handshake micro-benchmark: "+name, false, "") })
		if err != nil {
			return nil, err
		}
		r.res.Micro = micro
	}
	steps := []struct {
		row string
		fn  func() error
	}{
		{RowHandshake, r.handshakes},
		{RowPrewarm, r.prewarm},
		{RowThroughput, r.throughput},
		{RowMemory, r.memory},
		{RowRate, r.rate},
	}
	for _, s := range steps {
		if !o.want(s.row) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return r.res, err
		}
		if err := s.fn(); err != nil {
			return r.res, err
		}
	}
	r.res.Seconds = time.Since(r.res.Started).Seconds()
	return r.res, nil
}

func (r *runner) countSteps() int {
	n := 0
	peers := len(r.o.Peers)
	if r.o.want(RowCrypto) {
		n += 8
		if r.o.OpenSSL != "" {
			n++
		}
	}
	if r.o.want(RowMicro) {
		n += 4
	}
	baseline := 0
	if r.o.Baseline != nil {
		baseline = 1
	}
	if r.o.want(RowHandshake) {
		n += len(r.o.Kinds) * r.o.Rounds * (peers + len(r.o.HandshakePeers) + baseline)
	}
	if r.o.want(RowPrewarm) {
		n += len(r.prewarmVariants()) * r.o.Rounds
	}
	if r.o.want(RowThroughput) {
		n += 4 * r.o.Rounds * (peers + baseline)
	}
	if r.o.want(RowMemory) {
		n += r.o.Rounds * (peers + baseline)
	}
	if r.o.want(RowRate) && r.rateSkip == nil {
		n += r.o.Rounds * len(RateKinds()) * len(r.ratePeers())
	}
	return n
}

// order returns the peers (or columns) in the order of round i: as given
// on even rounds, reversed on odd ones, so that none always runs first (A
// B, B A, ...).
func order[T any](peers []T, i int) []T {
	out := slices.Clone(peers)
	if i%2 == 1 {
		slices.Reverse(out)
	}
	return out
}

// spec returns a ProxySpec with a fresh listen port and directory.
func (r *runner) spec(p Peer, key pki.KeyType, version uint16, reuse bool, upstreams []string) (ProxySpec, error) {
	addr, err := FreePort()
	if err != nil {
		return ProxySpec{}, err
	}
	dir, err := os.MkdirTemp(r.o.Dir, p.Name()+"-")
	if err != nil {
		return ProxySpec{}, fmt.Errorf("making a directory for %s: %w", p.Name(), err)
	}
	return ProxySpec{
		Listen: addr, Upstreams: upstreams, Workers: r.o.Workers, Version: version, Reuse: reuse,
		Material: r.material[key], Dir: dir,
	}, nil
}

func (r *runner) backends(key pki.KeyType, mode string, sourceBytes int64) (Backends, error) {
	return r.backendsFor(key, mode, sourceBytes, false)
}

// backendsFor starts backends that speak TLS with key's certificate, or
// plaintext.
func (r *runner) backendsFor(key pki.KeyType, mode string, sourceBytes int64, plain bool) (Backends, error) {
	m := r.material[key]
	return r.o.StartBackends(BackendSpec{
		Mode: mode, SourceBytes: sourceBytes, Plain: plain,
		CertFile: m.Files.ServerCert, KeyFile: m.Files.ServerKey, CAFile: m.Files.CA,
	})
}

// quiesce waits until the upstreams hold no connection (the proxy has
// closed every upstream session of the round), at most limit.
func quiesce(b Backends, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		st, err := b.Stats()
		if err != nil || st.Active == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// withBaseline returns peers followed by the baseline build, if any.
func (r *runner) withBaseline(peers ...Peer) []Peer {
	if r.o.Baseline != nil {
		peers = append(peers, r.o.Baseline)
	}
	return peers
}

func (r *runner) handshakes() error {
	peers := r.withBaseline(append(append([]Peer(nil), r.o.Peers...), r.o.HandshakePeers...)...)
	// One set of backends per group of rows: TLS with each key, and
	// plaintext.
	for _, g := range []struct {
		key   pki.KeyType
		plain bool
	}{{pki.ECDSAP256, false}, {pki.RSA2048, false}, {pki.ECDSAP256, true}} {
		var kinds []HandshakeKind
		for _, k := range r.o.Kinds {
			if k.Key == g.key && k.Plain == g.plain {
				kinds = append(kinds, k)
			}
		}
		if len(kinds) == 0 {
			continue
		}
		b, err := r.backendsFor(g.key, "echo", 0, g.plain)
		if err != nil {
			return fmt.Errorf("starting %s backends: %w", g.key, err)
		}
		for _, k := range kinds {
			row := HandshakeRow{Kind: k, Name: k.String(), Cells: map[string]*HandshakeCell{}}
			if len(r.res.Crypto) > 0 && !k.Plain {
				f := CryptoFloor(k, r.res.Crypto)
				row.Floor = &f
			}
			// OpenSSL's speed run has no AES record size to count a resumed
			// TLS 1.2 handshake with.
			if len(r.res.OpenSSLCrypto) > 0 && !k.Plain && !(k.Resumed && k.Version == tls.VersionTLS12) {
				f := CryptoFloor(k, r.res.OpenSSLCrypto)
				row.OpenSSLFloor = &f
			}
			for _, p := range peers {
				row.Cells[p.Name()] = &HandshakeCell{}
			}
			for i := 0; i < r.o.Rounds; i++ {
				for _, p := range order(peers, i) {
					if err := r.ctx.Err(); err != nil {
						b.Close()
						return err
					}
					label := fmt.Sprintf("handshake %s · %s · round %d/%d", k, p.Name(), i+1, r.o.Rounds)
					r.o.Step(label, false, "")
					hr := r.handshakeRound(p, k, b)
					cell := row.Cells[p.Name()]
					cell.Rounds = append(cell.Rounds, hr)
					if hr.Err != "" {
						r.o.Step(label, true, "error: "+hr.Err)
					} else {
						r.o.Step(label, true, fmt.Sprintf("%.0f µs/conn, %.0f conns/s, p99 %.2f ms, resumed %.0f%%",
							hr.CPUMicros, hr.ConnsPerSec, hr.P99Millis, 100*hr.HitRate))
					}
				}
			}
			for _, c := range row.Cells {
				c.summarize()
			}
			r.res.Handshake = append(r.res.Handshake, row)
		}
		b.Close()
	}
	return nil
}

func (c *HandshakeCell) summarize() {
	var cpu, cps, p50, p99, hit []float64
	var errs []string
	for _, rd := range c.Rounds {
		if rd.Err != "" {
			errs = append(errs, rd.Err)
			continue
		}
		cpu = append(cpu, rd.CPUMicros)
		cps = append(cps, rd.ConnsPerSec)
		p50 = append(p50, rd.P50Millis)
		p99 = append(p99, rd.P99Millis)
		if rd.Handshakes > 0 {
			hit = append(hit, rd.HitRate)
		}
	}
	c.CPUMicros, c.ConnsPerSec = Summarize(cpu), Summarize(cps)
	c.P50Millis, c.P99Millis, c.HitRate = Summarize(p50), Summarize(p99), Summarize(hit)
	c.Err = cellError(errs, len(c.Rounds))
}

// cellError says why a cell has no value, or how many of its rounds failed.
func cellError(errs []string, rounds int) string {
	switch {
	case len(errs) == 0:
		return ""
	case len(errs) == rounds:
		return errs[0]
	default:
		return fmt.Sprintf("%d of %d rounds failed: %s", len(errs), rounds, errs[0])
	}
}

// startWarmed starts p for spec, checks an echo through it and warms it
// up: every worker and every upstream gets its first (full) handshake and
// its first ticket before a measurement. name is p's column in errors. On
// an error nothing is left running; otherwise the caller stops it.
func (r *runner) startWarmed(p Peer, spec ProxySpec, name string) (*Instance, error) {
	in, err := p.Start(spec)
	if err != nil {
		return nil, err
	}
	if err := CheckEcho(spec.Listen, 5*time.Second); err != nil {
		in.Stop()
		return nil, fmt.Errorf("no echo through %s: %w", name, err)
	}
	warm := RunConnLoad(r.ctx, ConnLoad{Addr: spec.Listen, Workers: r.o.LoadWorkers,
		MaxConns: 4 * r.o.LoadWorkers, Duration: 10 * time.Second})
	if warm.Conns == 0 {
		in.Stop()
		return nil, fmt.Errorf("warm-up failed: %v", warm.FirstErr)
	}
	return in, nil
}

func (r *runner) handshakeRound(p Peer, k HandshakeKind, b Backends) HandshakeRound {
	var hr HandshakeRound
	spec, err := r.spec(p, k.Key, k.Version, k.Resumed, b.Addrs())
	if err != nil {
		hr.Err = err.Error()
		return hr
	}
	spec.Plain = k.Plain
	in, err := r.startWarmed(p, spec, p.Name())
	if err != nil {
		hr.Err = err.Error()
		return hr
	}
	defer in.Stop()
	quiesce(b, 2*time.Second)
	cpu0, err0 := in.CPU()
	st0, err1 := b.Stats()
	lr := RunConnLoad(r.ctx, ConnLoad{Addr: spec.Listen, Workers: r.o.LoadWorkers,
		MaxConns: r.o.HandshakeMaxConns, Duration: r.o.HandshakeDuration})
	quiesce(b, 3*time.Second)
	cpu1, err2 := in.CPU()
	st1, err3 := b.Stats()
	for _, err := range []error{err0, err1, err2, err3} {
		if err != nil {
			hr.Err = err.Error()
			return hr
		}
	}
	hr.Conns, hr.Errors, hr.Seconds = lr.Conns, lr.Errors, lr.Elapsed.Seconds()
	if lr.Conns == 0 {
		hr.Err = fmt.Sprintf("no connection completed: %v", lr.FirstErr)
		return hr
	}
	if lr.Errors*100 > lr.Conns+lr.Errors {
		hr.Err = fmt.Sprintf("%d of %d connections failed: %v", lr.Errors, lr.Conns+lr.Errors, lr.FirstErr)
		return hr
	}
	hr.CPUSeconds = (cpu1 - cpu0).Seconds()
	hr.CPUMicros = hr.CPUSeconds * 1e6 / float64(lr.Conns)
	hr.ConnsPerSec = float64(lr.Conns) / lr.Elapsed.Seconds()
	hr.P50Millis = float64(Percentile(lr.Latencies, 50)) / 1e6
	hr.P99Millis = float64(Percentile(lr.Latencies, 99)) / 1e6
	hr.Handshakes, hr.Resumed = st1.Handshakes-st0.Handshakes, st1.Resumed-st0.Resumed
	hr.UpstreamErrors = st1.HandshakeErrors - st0.HandshakeErrors
	if hr.Handshakes > 0 {
		hr.HitRate = float64(hr.Resumed) / float64(hr.Handshakes)
	}
	return hr
}

func (r *runner) throughput() error {
	for _, tc := range []struct {
		conns int
		plain bool
	}{{1, false}, {16, false}, {1, true}, {16, true}} {
		conns := tc.conns
		each := r.o.StreamBytes
		if conns > 1 {
			each /= 4
		}
		b, err := r.backendsFor(pki.ECDSAP256, "source", each, tc.plain)
		if err != nil {
			return fmt.Errorf("starting source backends: %w", err)
		}
		row := ThroughputRow{Conns: conns, BytesPerConn: each, Plain: tc.plain, Cells: map[string]*ThroughputCell{}}
		peers := r.withBaseline(r.o.Peers...)
		for _, p := range peers {
			row.Cells[p.Name()] = &ThroughputCell{}
		}
		for i := 0; i < r.o.Rounds; i++ {
			for _, p := range order(peers, i) {
				if err := r.ctx.Err(); err != nil {
					b.Close()
					return err
				}
				label := fmt.Sprintf("throughput %d conn × %d MiB%s · %s · round %d/%d", conns, each>>20, row.suffix(), p.Name(), i+1, r.o.Rounds)
				r.o.Step(label, false, "")
				tr := r.throughputRound(p, b, conns, each, tc.plain)
				row.Cells[p.Name()].Rounds = append(row.Cells[p.Name()].Rounds, tr)
				if tr.Err != "" {
					r.o.Step(label, true, "error: "+tr.Err)
				} else {
					r.o.Step(label, true, fmt.Sprintf("%.0f MiB/s, %.2f CPU s/GiB", tr.MiBps, tr.CPUSecPerGiB))
				}
			}
		}
		b.Close()
		for _, c := range row.Cells {
			var mbs, cpg []float64
			var errs []string
			for _, rd := range c.Rounds {
				if rd.Err != "" {
					errs = append(errs, rd.Err)
					continue
				}
				mbs = append(mbs, rd.MiBps)
				cpg = append(cpg, rd.CPUSecPerGiB)
			}
			c.MiBps, c.CPUSecPerGiB, c.Err = Summarize(mbs), Summarize(cpg), cellError(errs, len(c.Rounds))
		}
		r.res.Throughput = append(r.res.Throughput, row)
	}
	return nil
}

func (r *runner) throughputRound(p Peer, b Backends, conns int, each int64, plain bool) ThroughputRound {
	var tr ThroughputRound
	spec, err := r.spec(p, pki.ECDSAP256, tls.VersionTLS13, true, b.Addrs())
	if err != nil {
		tr.Err = err.Error()
		return tr
	}
	spec.Plain = plain
	in, err := p.Start(spec)
	if err != nil {
		tr.Err = err.Error()
		return tr
	}
	defer in.Stop()
	cpu0, err := in.CPU()
	if err != nil {
		tr.Err = err.Error()
		return tr
	}
	sr, err := RunStreams(r.ctx, spec.Listen, conns, each, 60*time.Second)
	if err != nil {
		tr.Err = err.Error()
		return tr
	}
	quiesce(b, 3*time.Second)
	cpu1, err := in.CPU()
	if err != nil {
		tr.Err = err.Error()
		return tr
	}
	tr.Bytes, tr.Seconds, tr.CPUSeconds = sr.Bytes, sr.Elapsed.Seconds(), (cpu1 - cpu0).Seconds()
	tr.MiBps = float64(sr.Bytes) / (1 << 20) / tr.Seconds
	tr.CPUSecPerGiB = tr.CPUSeconds / (float64(sr.Bytes) / (1 << 30))
	return tr
}
