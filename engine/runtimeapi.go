package engine

// The runtime API (the api directive) on the metrics_listen address, in
// NGINX Plus's shape for stream upstreams (API version 9):
//
//	GET   /api/                                          [9]
//	GET   /api/9/stream/upstreams                        every group, its peers and their state
//	GET   /api/9/stream/upstreams/NAME                   one group
//	GET   /api/9/stream/upstreams/NAME/servers           the servers' settings
//	GET   /api/9/stream/upstreams/NAME/servers/ID        one server's settings
//	PATCH /api/9/stream/upstreams/NAME/servers/ID        {"drain":true} {"down":true} {"weight":2} {"max_conns":10}
//
// Every handler runs on the metrics server's goroutine for the request; it
// reads the plan in force at that moment, so a reload changes what it
// sees (and drops what PATCH changed: a reload builds the groups anew).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/tlsrelay/tlsrelay/engine/errlog"
	"github.com/tlsrelay/tlsrelay/pool"
)

// apiVersion is the NGINX Plus API version whose shape /api follows.
const apiVersion = 9

// apiPeer is one peer in GET /api/9/stream/upstreams, with NGINX Plus's
// field names, and tlsrelay's handshake counts.
type apiPeer struct {
	ID          int           `json:"id"`
	Server      string        `json:"server"`
	Name        string        `json:"name"`
	Backup      bool          `json:"backup"`
	Weight      int           `json:"weight"`
	State       string        `json:"state"`
	Active      int           `json:"active"`
	MaxConns    int           `json:"max_conns,omitempty"`
	Connections uint64        `json:"connections"`
	Fails       uint64        `json:"fails"`
	Health      apiHealth     `json:"health_checks"`
	Handshakes  apiHandshakes `json:"handshakes"`
}

// apiHealth is a peer's health_check results.
type apiHealth struct {
	Checks    uint64 `json:"checks"`
	Fails     uint64 `json:"fails"`
	Unhealthy bool   `json:"unhealthy"`
}

// apiHandshakes are a peer's upstream TLS handshakes.
type apiHandshakes struct {
	Full    uint64 `json:"full"`
	Resumed uint64 `json:"resumed"`
	Failed  uint64 `json:"failed"`
}

// apiUpstream is one group.
type apiUpstream struct {
	Peers   []apiPeer `json:"peers"`
	Zombies int       `json:"zombies"`
}

// apiServer is one server's settings (GET .../servers, and what PATCH
// returns).
type apiServer struct {
	ID       int    `json:"id"`
	Server   string `json:"server"`
	Weight   int    `json:"weight"`
	MaxConns int    `json:"max_conns"`
	MaxFails int    `json:"max_fails"`
	Backup   bool   `json:"backup"`
	Down     bool   `json:"down"`
	Drain    bool   `json:"drain,omitempty"`
}

// apiPatch is PATCH's body: the fields to change.
type apiPatch struct {
	Drain    *bool `json:"drain"`
	Down     *bool `json:"down"`
	Weight   *int  `json:"weight"`
	MaxConns *int  `json:"max_conns"`
}

// serveAPI answers /api/...: 404 without the api directive, 403 to a client
// outside its allow list, 405 for PATCH unless write=on.
func (e *Engine) serveAPI(w http.ResponseWriter, r *http.Request) {
	// One plan for the whole request: a reload between two reads would
	// pair one configuration's api settings with another's groups.
	pl := e.plan.Load()
	api := pl.cfg.Main.API
	if api == nil {
		apiError(w, http.StatusNotFound, "NotFound", "no api directive in the configuration")
		return
	}
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	addr, err := netip.ParseAddr(host)
	if err != nil || !api.Allows(addr) {
		apiError(w, http.StatusForbidden, "Forbidden", "client "+host+" is not in the api directive's allow list")
		return
	}
	path := strings.Trim(strings.TrimPrefix(r.URL.Path, "/api"), "/")
	parts := strings.Split(path, "/")
	switch {
	case path == "" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, []int{apiVersion})
		return
	case len(parts) < 3 || parts[0] != strconv.Itoa(apiVersion) || parts[1] != "stream" || parts[2] != "upstreams":
		apiError(w, http.StatusNotFound, "PathNotFound", "unknown path: /api/9/stream/upstreams is served")
		return
	}
	groups := pl.groups
	if len(parts) == 3 {
		if r.Method != http.MethodGet {
			apiError(w, http.StatusMethodNotAllowed, "MethodNotSupported", "method not supported")
			return
		}
		out := map[string]apiUpstream{}
		for name, g := range groups {
			out[name] = upstreamJSON(g)
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	g := groups[parts[3]]
	if g == nil {
		apiError(w, http.StatusNotFound, "UpstreamNotFound", fmt.Sprintf("upstream %q not found", parts[3]))
		return
	}
	switch {
	case len(parts) == 4 && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, upstreamJSON(g))
	case len(parts) == 5 && parts[4] == "servers" && r.Method == http.MethodGet:
		var out []apiServer
		for i, p := range g.Peers() {
			out = append(out, serverJSON(g, i, p))
		}
		writeJSON(w, http.StatusOK, out)
	case len(parts) == 6 && parts[4] == "servers":
		peers := g.Peers()
		id, err := strconv.Atoi(parts[5])
		if err != nil || id < 0 || id >= len(peers) {
			apiError(w, http.StatusNotFound, "UpstreamServerNotFound", fmt.Sprintf("server %q of upstream %q not found", parts[5], parts[3]))
			return
		}
		switch r.Method {
		case http.MethodGet:
			writeJSON(w, http.StatusOK, serverJSON(g, id, peers[id]))
		case http.MethodPatch:
			if !api.Write {
				apiError(w, http.StatusMethodNotAllowed, "MethodDisabled", "method disabled: the api directive has no write=on")
				return
			}
			e.patchServer(w, r, g, id, peers[id], host)
		default:
			apiError(w, http.StatusMethodNotAllowed, "MethodNotSupported", "method not supported")
		}
	default:
		apiError(w, http.StatusNotFound, "PathNotFound", "unknown path")
	}
}

// patchServer applies a PATCH to peer p (index id of g) and logs it at
// notice with who asked.
func (e *Engine) patchServer(w http.ResponseWriter, r *http.Request, g *pool.Group, id int, p *pool.Peer, who string) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 4096))
	if err != nil {
		apiError(w, http.StatusBadRequest, "BodyReadError", "reading the body: "+err.Error())
		return
	}
	var patch apiPatch
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&patch); err != nil {
		apiError(w, http.StatusBadRequest, "UpstreamConfFormatError", "the body is not a JSON object of drain, down, weight, max_conns: "+err.Error())
		return
	}
	if patch.MaxConns != nil && *patch.MaxConns < 0 {
		apiError(w, http.StatusBadRequest, "UpstreamConfFormatError", "max_conns must be 0 (no limit) or more")
		return
	}
	if patch.Weight != nil {
		if err := g.SetWeight(p, *patch.Weight); err != nil {
			apiError(w, http.StatusBadRequest, "UpstreamConfFormatError", err.Error())
			return
		}
	}
	if patch.MaxConns != nil {
		p.SetMaxConns(*patch.MaxConns)
	}
	switch {
	case patch.Down != nil && *patch.Down:
		p.SetDown(true)
	case patch.Drain != nil && *patch.Drain:
		p.SetDrain(true)
	case patch.Down != nil:
		p.SetDown(false)
	case patch.Drain != nil:
		p.SetDrain(false)
	}
	st := serverJSON(g, id, p)
	e.log.Logf(errlog.LevelNotice, 0, "api: %s asked to change server %d (%s) of upstream %q: %s; now weight %d, max_conns %d, %s (until the next reload)",
		who, id, p, g.Name(), strings.TrimSpace(string(body)), st.Weight, st.MaxConns, p.State(time.Now()))
	writeJSON(w, http.StatusOK, st)
}

// upstreamJSON describes g and its peers now.
func upstreamJSON(g *pool.Group) apiUpstream {
	u := apiUpstream{Peers: []apiPeer{}}
	now := time.Now()
	for i, p := range g.Peers() {
		full, resumed, failed := p.Handshakes()
		checks, checkFails := p.HealthChecks()
		u.Peers = append(u.Peers, apiPeer{ID: i, Server: p.String(), Name: p.Name, Backup: p.Backup, Weight: g.WeightNow(p),
			State: p.State(now).String(), Active: p.Conns(), MaxConns: p.MaxConnsNow(), Connections: p.Selected(),
			Fails: p.Failures(), Health: apiHealth{Checks: checks + checkFails, Fails: checkFails, Unhealthy: p.Unhealthy()},
			Handshakes: apiHandshakes{Full: full, Resumed: resumed, Failed: failed}})
	}
	return u
}

// serverJSON describes the settings of peer p, index id of g.
func serverJSON(g *pool.Group, id int, p *pool.Peer) apiServer {
	return apiServer{ID: id, Server: p.String(), Weight: g.WeightNow(p), MaxConns: p.MaxConnsNow(), MaxFails: p.MaxFails,
		Backup: p.Backup, Down: p.Down || p.AdminDown(), Drain: p.Draining()}
}

// writeJSON writes v with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// apiError writes NGINX Plus's error object.
func apiError(w http.ResponseWriter, status int, code, text string) {
	writeJSON(w, status, map[string]any{"error": map[string]any{"status": status, "text": text, "code": code}})
}
