package metrics

import (
	"iter"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tlsrelay/tlsrelay/pool"
	"github.com/tlsrelay/tlsrelay/pool/dial"
	"github.com/tlsrelay/tlsrelay/tlsbridge"
)

// Sources are what a Collector reads at each scrape. A nil field leaves its
// series out.
type Sources struct {
	// Engine is the engine's counters.
	Engine *Engine
	// Peers yields the peers of the current configuration with their
	// group's name. It is called once per scrape, on the scrape's
	// goroutine, and must be safe there (load the current configuration
	// atomically, do not lock the data path).
	Peers iter.Seq2[string, *pool.Peer]
	// Groups yields the upstream groups of the current configuration,
	// for the DNS re-resolution counters of those with `resolve`
	// servers. Called once per scrape, like Peers.
	Groups iter.Seq[*pool.Group]
	// Dialer returns the current dialer. Called once per scrape.
	Dialer func() *dial.Dialer
	// Stores yields the current TLS session stores; their counts are
	// added. Called once per scrape.
	Stores iter.Seq[*tlsbridge.SessionStore]
	// NameLookups counts the lookups of names proxy_pass values give
	// (pool.Names); nil leaves the series out.
	NameLookups *pool.NameStats
	// Prewarmed returns how many pre-warmed upstream connections are
	// ready now (proxy_ssl_prewarm). Called once per scrape.
	Prewarmed func() int
	// Now is the clock for the peers' states; nil means time.Now.
	Now func() time.Time
}

// Collector is a prometheus.Collector of tlsrelay's series (listed in the
// package documentation). It holds no counts of its own: Collect reads the
// Sources' atomics and makes constant metrics, so a scrape never takes a
// lock of the data path. Describe and Collect are safe from any goroutine.
type Collector struct {
	src Sources
	d   descs
}

var _ prometheus.Collector = (*Collector)(nil)

type descs struct {
	accepted, active, ended, bytes                       *prometheus.Desc
	stalls, pauses, idle                                 *prometheus.Desc
	reloads, lastReload                                  *prometheus.Desc
	acceptFailures, refused, proxyHeaderFailures         *prometheus.Desc
	handshakes, hsFailures, hsDuration, connDuration     *prometheus.Desc
	hsGroups                                             *prometheus.Desc
	selections, peerFailures, peerActive, peerState      *prometheus.Desc
	healthChecks, prewarmed, prewarmedReady, resolutions *prometheus.Desc
	upCloses, nameLookups                                *prometheus.Desc
	dialsInFlight, workers, jobs                         *prometheus.Desc
	tickets, ticketKeys, ticketsStored, ticketsDropped   *prometheus.Desc
}

// NewCollector returns a Collector reading src.
func NewCollector(src Sources) *Collector {
	if src.Now == nil {
		src.Now = time.Now
	}
	n := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("tlsrelay_"+name, help, labels, nil)
	}
	up := []string{"upstream", "peer"}
	return &Collector{src: src, d: descs{
		accepted:            n("sessions_accepted_total", "Client connections accepted."),
		active:              n("sessions_active", "Sessions open now."),
		ended:               n("sessions_ended_total", "Sessions ended, by reason.", "reason"),
		bytes:               n("bytes_total", "Bytes moved by finished sessions, by direction.", "direction"),
		stalls:              n("backpressure_stalls_total", "Times a side of a session stopped being consumed (backpressure or rate limit)."),
		pauses:              n("backpressure_pauses_total", "Times a socket was paused for backpressure."),
		idle:                n("idle_timeouts_total", "Sessions ended by proxy_timeout."),
		reloads:             n("reloads_total", "Configuration reloads, by result.", "result"),
		acceptFailures:      n("accept_failures_total", "accept() calls that failed (EMFILE, ENFILE and others); accepting pauses, sessions go on."),
		refused:             n("sessions_refused_total", "Clients closed at once because their event loop had no worker_connections left."),
		proxyHeaderFailures: n("proxy_header_failures_total", "Clients closed for a malformed or late PROXY protocol header (listen ... proxy_protocol)."),
		lastReload:          n("last_reload_success_timestamp_seconds", "Unix time of the last configuration load that worked (0: none yet)."),
		handshakes:          n("upstream_handshakes_total", "Upstream TLS handshakes, by outcome (failed includes every class of upstream_handshake_failures_total).", append(up, "outcome")...),
		hsGroups:            n("upstream_handshake_groups_total", "Completed upstream TLS handshakes, by the key exchange group the upstream chose (other: a TLS 1.2 resumption, which makes none, or a group not listed).", append(up, "group")...),
		hsFailures:          n("upstream_handshake_failures_total", "Failed upstream TLS handshakes, by class.", append(up, "class")...),
		hsDuration:          n("upstream_handshake_duration_seconds", "Duration of completed upstream TLS handshakes.", up...),
		connDuration:        n("upstream_connect_duration_seconds", "Duration of successful upstream TCP connects.", up...),
		selections:          n("upstream_peer_selections_total", "Times a balancer picked the peer.", up...),
		prewarmed:           n("upstream_prewarmed_total", "Pre-warmed upstream connections (proxy_ssl_prewarm), by what became of them: used by a session, expired (max_idle), closed by the upstream while ready, failed to connect or handshake.", "result"),
		upCloses:            n("upstream_closes_total", "Upstream connections ended, by which side closed first (its socket keeps TIME_WAIT) and how: close_notify then FIN, FIN alone, or a reset.", "first", "how"),
		prewarmedReady:      n("upstream_prewarmed_ready", "Pre-warmed upstream connections (proxy_ssl_prewarm) ready now, handshake done, waiting for a session."),
		healthChecks:        n("upstream_health_checks_total", "Active health-check probes of the peer (health_check), by result.", append(up, "result")...),
		resolutions:         n("upstream_resolutions_total", "DNS resolutions of the group's resolve servers, by result (failed: timeout, SERVFAIL, NXDOMAIN and other errors).", "upstream", "result"),
		nameLookups:         n("proxy_pass_lookups_total", "Lookups of the names proxy_pass values with variables give, by result: cached (a kept answer), ok and failed (queries sent; failed: timeout, SERVFAIL, NXDOMAIN and other errors), refused (malformed, or too many names in flight).", "result"),
		peerFailures:        n("upstream_peer_failures_total", "Failed attempts on the peer (connect, PROXY header, TLS handshake, verification).", up...),
		peerActive:          n("upstream_peer_active_connections", "Connections to the peer now (being set up or established).", up...),
		peerState:           n("upstream_peer_state", "The peer's state: 1 for the current one of up, banned (max_fails within fail_timeout), down (configured down), unhealthy (failing its health_check).", append(up, "state")...),
		dialsInFlight:       n("dial_in_flight", "Upstream dials in progress, by step: connecting (TCP connect and PROXY header) or handshaking (TLS).", "state"),
		workers:             n("dial_workers", "Dialer goroutines running, by state: busy (running a dial job), idle (kept for the next one).", "state"),
		jobs:                n("dial_jobs_total", "Dial jobs, by result: submitted; rejected (the dialer was closed); cancelled (the client left, or the proxy stopped, while the job ran).", "result"),
		tickets:             n("session_tickets", "Upstream TLS sessions (tickets) held for resumption."),
		ticketKeys:          n("session_ticket_keys", "Keys (endpoint, TLS policy, names) the session store holds tickets under."),
		ticketsStored:       n("session_tickets_stored_total", "Upstream TLS sessions stored."),
		ticketsDropped:      n("session_tickets_dropped_total", "Upstream TLS sessions dropped, by reason (evicted for room, expired, refused by the upstream).", "reason"),
	}}
}

// Describe sends the descriptors of every series.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	d := &c.d
	for _, x := range []*prometheus.Desc{
		d.accepted, d.active, d.ended, d.bytes, d.stalls, d.pauses, d.idle, d.reloads, d.lastReload,
		d.acceptFailures, d.refused, d.proxyHeaderFailures,
		d.handshakes, d.hsFailures, d.hsGroups, d.hsDuration, d.connDuration, d.selections, d.peerFailures, d.peerActive, d.peerState,
		d.healthChecks, d.prewarmed, d.prewarmedReady, d.resolutions, d.upCloses, d.nameLookups,
		d.dialsInFlight, d.workers, d.jobs,
		d.tickets, d.ticketKeys, d.ticketsStored, d.ticketsDropped,
	} {
		ch <- x
	}
}

// Collect reads the sources and sends the series.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	if c.src.Engine != nil {
		c.collectEngine(ch, c.src.Engine.Snapshot())
	}
	if c.src.Peers != nil {
		c.collectPeers(ch)
	}
	if c.src.Prewarmed != nil {
		ch <- gauge(c.d.prewarmedReady, float64(c.src.Prewarmed()))
	}
	if c.src.Groups != nil {
		for g := range c.src.Groups {
			if g == nil || !g.Resolves() {
				continue
			}
			ok, failed := g.Resolutions()
			ch <- counter(c.d.resolutions, ok, g.Name(), "ok")
			ch <- counter(c.d.resolutions, failed, g.Name(), "failed")
		}
	}
	if st := c.src.NameLookups; st != nil {
		ch <- counter(c.d.nameLookups, st.Cached.Load(), "cached")
		ch <- counter(c.d.nameLookups, st.OK.Load(), "ok")
		ch <- counter(c.d.nameLookups, st.Failed.Load(), "failed")
		ch <- counter(c.d.nameLookups, st.Refused.Load(), "refused")
	}
	if c.src.Dialer != nil {
		if dl := c.src.Dialer(); dl != nil {
			c.collectDialer(ch, dl.Stats(), dl.InFlight())
		}
	}
	if c.src.Stores != nil {
		var sum tlsbridge.StoreCounters
		for s := range c.src.Stores {
			if s == nil {
				continue
			}
			x := s.Counters()
			sum.Tickets += x.Tickets
			sum.Keys += x.Keys
			sum.Stored += x.Stored
			sum.Evicted += x.Evicted
			sum.Expired += x.Expired
			sum.Refused += x.Refused
		}
		c.collectStores(ch, sum)
	}
}

func counter(d *prometheus.Desc, v uint64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
}

func gauge(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func (c *Collector) collectEngine(ch chan<- prometheus.Metric, s EngineSnapshot) {
	d := &c.d
	ch <- counter(d.accepted, s.Accepted)
	ch <- gauge(d.active, float64(s.Active))
	for r := ReasonNone + 1; int(r) < Reasons; r++ {
		ch <- counter(d.ended, s.Ended[r], r.String())
	}
	ch <- counter(d.bytes, s.BytesFromClient, "from_client")
	ch <- counter(d.bytes, s.BytesToClient, "to_client")
	ch <- counter(d.bytes, s.BytesFromUp, "from_upstream")
	ch <- counter(d.bytes, s.BytesToUp, "to_upstream")
	ch <- counter(d.stalls, s.Stalls)
	ch <- counter(d.pauses, s.Pauses)
	ch <- counter(d.idle, s.IdleTimeouts)
	ch <- counter(d.reloads, s.ReloadsOK, "ok")
	ch <- counter(d.reloads, s.ReloadsFailed, "failed")
	ch <- counter(d.acceptFailures, s.AcceptFailures)
	ch <- counter(d.refused, s.Refused)
	ch <- counter(d.proxyHeaderFailures, s.ProxyHeaderFailures)
	for r, n := range s.Prewarmed {
		ch <- counter(d.prewarmed, n, dial.WarmResult(r).String())
	}
	for c := CloseUnknown + 1; int(c) < UpstreamCloses; c++ {
		first, how := c.Labels()
		ch <- counter(d.upCloses, s.UpstreamCloses[c], first, how)
	}
	var last float64
	if !s.LastLoad.IsZero() {
		last = float64(s.LastLoad.UnixNano()) / 1e9
	}
	ch <- gauge(d.lastReload, last)
}

// peerAgg is what one (group, address) series shows: the sum of the peers
// that share it.
type peerAgg struct {
	group, addr           string
	full, resumed, failed uint64
	checksOK, checksBad   uint64
	byClass               [pool.FailureClasses]uint64
	byGroup               [pool.KeyGroups]uint64
	handshake, connect    pool.HistogramSnapshot
	selected, failures    uint64
	conns                 int64
	state                 pool.PeerState
}

func addHist(a *pool.HistogramSnapshot, b pool.HistogramSnapshot) {
	a.Count += b.Count
	a.Sum += b.Sum
	for i := range a.Cumulative {
		a.Cumulative[i] += b.Cumulative[i]
	}
}

// better reports whether state a is better than b (up > banned >
// unhealthy > down).
func better(a, b pool.PeerState) bool {
	rank := func(s pool.PeerState) int {
		switch s {
		case pool.PeerUp:
			return 3
		case pool.PeerBanned:
			return 2
		case pool.PeerUnhealthy, pool.PeerDraining:
			return 1
		}
		return 0
	}
	return rank(a) > rank(b)
}

func (c *Collector) collectPeers(ch chan<- prometheus.Metric) {
	type key struct{ group, addr string }
	now := c.src.Now()
	index := map[key]int{}
	var aggs []*peerAgg
	for group, p := range c.src.Peers {
		if p == nil {
			continue
		}
		k := key{group, p.String()}
		i, ok := index[k]
		if !ok {
			i = len(aggs)
			index[k] = i
			aggs = append(aggs, &peerAgg{group: group, addr: k.addr, state: pool.PeerDown})
		}
		a := aggs[i]
		full, resumed, failed := p.Handshakes()
		a.full += full
		a.resumed += resumed
		a.failed += failed
		for j, n := range p.HandshakeFailures() {
			a.byClass[j] += n
		}
		for j, n := range p.HandshakeGroups() {
			a.byGroup[j] += n
		}
		addHist(&a.handshake, p.HandshakeTime())
		addHist(&a.connect, p.ConnectTime())
		passed, failedChecks := p.HealthChecks()
		a.checksOK += passed
		a.checksBad += failedChecks
		a.selected += p.Selected()
		a.failures += p.Failures()
		a.conns += int64(p.Conns())
		if st := p.State(now); !ok || better(st, a.state) {
			a.state = st
		}
	}
	d := &c.d
	for _, a := range aggs {
		l := []string{a.group, a.addr}
		ch <- counter(d.handshakes, a.full, a.group, a.addr, "full")
		ch <- counter(d.handshakes, a.resumed, a.group, a.addr, "resumed")
		ch <- counter(d.handshakes, a.failed, a.group, a.addr, "failed")
		for j, n := range a.byClass {
			ch <- counter(d.hsFailures, n, a.group, a.addr, dial.FailureClassName(j))
		}
		for j, n := range a.byGroup {
			ch <- counter(d.hsGroups, n, a.group, a.addr, dial.GroupSlotName(j))
		}
		ch <- constHistogram(d.hsDuration, a.handshake, l...)
		ch <- constHistogram(d.connDuration, a.connect, l...)
		ch <- counter(d.selections, a.selected, l...)
		ch <- counter(d.healthChecks, a.checksOK, a.group, a.addr, "ok")
		ch <- counter(d.healthChecks, a.checksBad, a.group, a.addr, "failed")
		ch <- counter(d.peerFailures, a.failures, l...)
		ch <- gauge(d.peerActive, float64(a.conns), l...)
		for s := range pool.PeerStates {
			v := 0.0
			if pool.PeerState(s) == a.state {
				v = 1
			}
			ch <- gauge(d.peerState, v, a.group, a.addr, pool.PeerState(s).String())
		}
	}
}

// constHistogram turns a pool histogram into a Prometheus one, in seconds.
func constHistogram(d *prometheus.Desc, h pool.HistogramSnapshot, labels ...string) prometheus.Metric {
	bounds := pool.HistogramBounds()
	buckets := make(map[float64]uint64, len(bounds))
	for i, b := range bounds {
		buckets[b.Seconds()] = h.Cumulative[i]
	}
	return prometheus.MustNewConstHistogram(d, h.Count, h.Sum.Seconds(), buckets, labels...)
}

// collectDialer sends the dialer's series. The engine's dialer has no
// queue and no bound on its goroutines (a bound let one silent upstream
// stall every server block), so there is no queue depth to report: what
// is worth watching is the dials in flight, by step.
func (c *Collector) collectDialer(ch chan<- prometheus.Metric, s dial.Stats, f dial.InFlight) {
	d := &c.d
	ch <- gauge(d.dialsInFlight, float64(f.Connecting), "connecting")
	ch <- gauge(d.dialsInFlight, float64(f.Handshaking), "handshaking")
	ch <- gauge(d.workers, float64(s.Busy), "busy")
	ch <- gauge(d.workers, float64(s.Workers-s.Busy), "idle")
	ch <- counter(d.jobs, s.Queued, "submitted")
	ch <- counter(d.jobs, s.Rejected, "rejected")
	ch <- counter(d.jobs, f.Cancelled, "cancelled")
}

func (c *Collector) collectStores(ch chan<- prometheus.Metric, s tlsbridge.StoreCounters) {
	d := &c.d
	ch <- gauge(d.tickets, float64(s.Tickets))
	ch <- gauge(d.ticketKeys, float64(s.Keys))
	ch <- counter(d.ticketsStored, s.Stored)
	ch <- counter(d.ticketsDropped, s.Evicted, "evicted")
	ch <- counter(d.ticketsDropped, s.Expired, "expired")
	ch <- counter(d.ticketsDropped, s.Refused, "refused")
}
