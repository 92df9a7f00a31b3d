package engine

// The live status page on the metrics_listen address: GET / is one HTML
// page with its CSS and script inline (no external asset), which polls GET
// /status.json every two seconds and draws the server blocks and upstream
// peers, with rates computed between two polls. Both read the counters the
// /metrics collector reads; neither shows key material. The handlers run
// on the metrics server's goroutine for the request.

import (
	_ "embed"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/tlsrelay/tlsrelay/engine/listen"
	"github.com/tlsrelay/tlsrelay/pool"
)

//go:embed status.html
var statusPage string // a string: immutable

// statusJSON is GET /status.json.
type statusJSON struct {
	Version   string           `json:"version"`
	Uptime    float64          `json:"uptime_seconds"`
	Now       int64            `json:"now_ms"`
	Loops     int              `json:"loops"`
	FDs       statusFDs        `json:"descriptors"`
	Reloads   statusReloads    `json:"reloads"`
	Ready     string           `json:"ready"`
	Sessions  statusSessions   `json:"sessions"`
	Servers   []statusServer   `json:"servers"`
	Upstreams []statusUpstream `json:"upstreams"`
}

type statusFDs struct {
	Open  int    `json:"open"`
	Limit uint64 `json:"limit"`
}

type statusReloads struct {
	OK     uint64 `json:"ok"`
	Failed uint64 `json:"failed"`
	Last   int64  `json:"last_ms"`
}

type statusSessions struct {
	Active   int64  `json:"active"`
	Accepted uint64 `json:"accepted"`
	Refused  uint64 `json:"refused"`
}

type statusServer struct {
	Name     string   `json:"name"`
	Listen   []string `json:"listen"`
	Upstream string   `json:"upstream"`
	TLS      bool     `json:"tls"`
}

type statusUpstream struct {
	Name  string       `json:"name"`
	Peers []statusPeer `json:"peers"`
}

type statusPeer struct {
	ID          int     `json:"id"`
	Server      string  `json:"server"`
	Name        string  `json:"name"`
	State       string  `json:"state"`
	Backup      bool    `json:"backup"`
	Weight      int     `json:"weight"`
	Active      int     `json:"active"`
	Selected    uint64  `json:"selected"`
	Full        uint64  `json:"full"`
	Resumed     uint64  `json:"resumed"`
	Failed      uint64  `json:"failed"`
	HandshakeMs float64 `json:"handshake_ms"`
	ChecksOK    uint64  `json:"checks_ok"`
	ChecksBad   uint64  `json:"checks_failed"`
	LastError   string  `json:"last_error,omitempty"`
	LastErrorAt int64   `json:"last_error_ms,omitempty"`
}

// serveStatusPage answers GET / (the page; 404 for any other path the mux
// sends here).
func (e *Engine) serveStatusPage(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'")
	io.WriteString(w, statusPage)
}

// serveStatusJSON answers GET /status.json.
func (e *Engine) serveStatusJSON(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, e.status(time.Now()))
}

// status collects what the page shows.
func (e *Engine) status(now time.Time) statusJSON {
	p := e.plan.Load()
	snap := e.m.Snapshot()
	_, ready := e.readiness()
	st := statusJSON{
		Version: e.opts.Version, Uptime: now.Sub(e.started).Seconds(), Now: now.UnixMilli(),
		Loops: p.cfg.Main.Loops(), FDs: statusFDs{Open: listen.OpenFDs(), Limit: listen.NofileLimit()},
		Reloads:  statusReloads{OK: snap.ReloadsOK, Failed: snap.ReloadsFailed},
		Ready:    ready,
		Sessions: statusSessions{Active: snap.Active, Accepted: snap.Accepted, Refused: snap.Refused},
	}
	if !snap.LastLoad.IsZero() {
		st.Reloads.Last = snap.LastLoad.UnixMilli()
	}
	for _, s := range p.servers {
		up := s.conf.ProxyPass // with variables: the value as written
		if s.group != nil {
			up = s.group.Name()
		}
		st.Servers = append(st.Servers, statusServer{Name: s.name, Listen: s.listen, Upstream: up, TLS: s.policy != nil})
	}
	names := make([]string, 0, len(p.groups))
	for name := range p.groups {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		g := p.groups[name]
		u := statusUpstream{Name: name, Peers: []statusPeer{}}
		for i, peer := range g.Peers() {
			u.Peers = append(u.Peers, peerStatus(g, i, peer, now))
		}
		st.Upstreams = append(st.Upstreams, u)
	}
	return st
}

// peerStatus describes one peer for the page.
func peerStatus(g *pool.Group, i int, p *pool.Peer, now time.Time) statusPeer {
	full, resumed, failed := p.Handshakes()
	ok, bad := p.HealthChecks()
	ps := statusPeer{ID: i, Server: p.String(), Name: p.Name, State: p.State(now).String(), Backup: p.Backup,
		Weight: g.WeightNow(p), Active: p.Conns(), Selected: p.Selected(), Full: full, Resumed: resumed, Failed: failed,
		ChecksOK: ok, ChecksBad: bad}
	if h := p.HandshakeTime(); h.Count > 0 {
		ps.HandshakeMs = float64(h.Sum.Microseconds()) / 1000 / float64(h.Count)
	}
	if le := p.LastError(); le != nil {
		ps.LastError, ps.LastErrorAt = strings.TrimSpace(le.Err.Error()), le.At.UnixMilli()
	}
	return ps
}
