package engine

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"crypto/tls"
	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// apiDo sends method path (body) to the API at addr and returns the status
// and the body.
func apiDo(t *testing.T, addr, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// apiPeers returns GET /api/9/stream/upstreams' peers of group.
func apiPeers(t *testing.T, addr, group string) []apiPeer {
	t.Helper()
	code, body := apiDo(t, addr, "GET", "/api/9/stream/upstreams", "")
	var ups map[string]apiUpstream
	if code != 200 || json.Unmarshal([]byte(body), &ups) != nil {
		t.Fatalf("GET upstreams: %d %s", code, body)
	}
	return ups[group].Peers
}

// TestRuntimeAPIDrain: an operator drains a peer through the API: new
// sessions go to the others, the sessions it holds go on and, once they
// end, its active count is zero; the change is logged at notice with who
// asked, and undone by draining off.
func TestRuntimeAPIDrain(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 3, backend.Echo, nil)
	text := strings.Replace(guideConf(ups, ""), "worker_processes 2;",
		"worker_processes 2;\nmetrics_listen 127.0.0.1:60;\napi write=on;\nerror_log stderr notice;", 1)
	tb := startEngine(t, dir, text)
	maddr := tb.eng.MetricsAddr()
	if code, body := apiDo(t, maddr, "GET", "/api/", ""); code != 200 || strings.TrimSpace(body) != "[\n  9\n]" {
		t.Errorf("GET /api/: %d %q", code, body)
	}
	var held []*heldSession
	for range 3 {
		held = append(held, holdSession(t, tb.addr))
	}
	peers := apiPeers(t, maddr, "backend")
	if len(peers) != 3 {
		t.Fatalf("peers %+v", peers)
	}
	drained := -1
	for _, p := range peers {
		if p.Active > 0 && p.State == "up" {
			drained = p.ID
			break
		}
	}
	if drained < 0 {
		t.Fatalf("no peer holds a session: %+v", peers)
	}
	before := peers[drained].Connections
	code, body := apiDo(t, maddr, "PATCH", "/api/9/stream/upstreams/backend/servers/"+strconv.Itoa(drained), `{"drain":true}`)
	if code != 200 || !strings.Contains(body, `"drain": true`) {
		t.Fatalf("PATCH drain: %d %s", code, body)
	}
	if !strings.Contains(tb.logText(), "[notice]") || !strings.Contains(tb.logText(), "api: 127.0.0.1 asked to change server") {
		t.Errorf("the change is not logged at notice with who asked:\n%s", tb.logText())
	}
	for range 9 {
		if _, err := echoOnce(tb.addr, []byte("new"), 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	peers = apiPeers(t, maddr, "backend")
	if p := peers[drained]; p.State != "draining" || p.Connections != before {
		t.Errorf("drained peer after 9 new sessions: %+v, want draining with %d connections", p, before)
	}
	for _, h := range held {
		if err := h.echo(32); err != nil {
			t.Errorf("a held session while its peer drains: %v", err)
		}
		h.c.Close()
	}
	testutil.WaitFor(t, "the drained peer's sessions at zero", 10*time.Second, func() bool {
		return apiPeers(t, maddr, "backend")[drained].Active == 0
	})
	if code, body := apiDo(t, maddr, "PATCH", "/api/9/stream/upstreams/backend/servers/"+strconv.Itoa(drained), `{"drain":false}`); code != 200 ||
		apiPeers(t, maddr, "backend")[drained].State != "up" {
		t.Errorf("PATCH drain off: %d %s", code, body)
	}
	for _, bad := range []struct{ path, body string }{
		{"/api/9/stream/upstreams/backend/servers/7", `{"down":true}`},
		{"/api/9/stream/upstreams/nosuch/servers/0", `{"down":true}`},
		{"/api/9/stream/upstreams/backend/servers/0", `{"bogus":1}`},
		{"/api/9/stream/upstreams/backend/servers/0", `{"max_conns":-1}`},
	} {
		if code, body := apiDo(t, maddr, "PATCH", bad.path, bad.body); code < 400 || !strings.Contains(body, `"error"`) {
			t.Errorf("PATCH %s %s: %d %s, want an error", bad.path, bad.body, code, body)
		}
	}
}

// TestRuntimeAPIAccess: without write=on PATCH is refused (405), a client
// outside the allow list gets 403 for anything, and without the api
// directive there is no API.
func TestRuntimeAPIAccess(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	for _, tc := range []struct {
		api                string
		getCode, patchCode int
	}{
		{"api;", 200, 405},
		{"api write=on allow=10.0.0.0/8;", 403, 403},
		{"", 404, 404},
	} {
		text := strings.Replace(guideConf(ups, ""), "worker_processes 2;", "worker_processes 2;\nmetrics_listen 127.0.0.1:60;\n"+tc.api, 1)
		tb := startEngine(t, dir, text)
		maddr := tb.eng.MetricsAddr()
		if code, body := apiDo(t, maddr, "GET", "/api/9/stream/upstreams", ""); code != tc.getCode {
			t.Errorf("%q: GET %d %s, want %d", tc.api, code, body, tc.getCode)
		}
		if code, body := apiDo(t, maddr, "PATCH", "/api/9/stream/upstreams/backend/servers/0", `{"down":true}`); code != tc.patchCode {
			t.Errorf("%q: PATCH %d %s, want %d", tc.api, code, body, tc.patchCode)
		}
		tb.stop()
		<-tb.done
		tb.done <- nil
	}
}

// TestLeastTimeFirstByte: least_time first_byte over a fast upstream and
// one that answers 200 ms late: after each has been measured once, every
// session goes to the fast one.
func TestLeastTimeFirstByte(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	echo := func(delay time.Duration) func(*tls.Conn) {
		return func(c *tls.Conn) {
			buf := make([]byte, 64)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					time.Sleep(delay)
					c.Write(buf[:n])
				}
				if err != nil {
					return
				}
			}
		}
	}
	fast := testutil.TLSServer(t, set.ServerConfig(), echo(0))
	// 200 ms: far above any scheduling delay of the fast one under the
	// race detector on a loaded machine (30 ms was not).
	slow := testutil.TLSServer(t, set.ServerConfig(), echo(200*time.Millisecond))
	text := "worker_processes 2;\nmetrics_listen 127.0.0.1:60;\napi;\nstream {\nupstream backend {\n    least_time first_byte;\n    server " + fast + ";\n    server " + slow + ";\n}\n" +
		strings.Replace(guideServer, "%s", "proxy_ssl_name localhost;", 1) + "}\n"
	tb := startEngine(t, dir, text)
	for range 20 {
		if _, err := echoOnce(tb.addr, []byte("timed"), 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	peers := apiPeers(t, tb.eng.MetricsAddr(), "backend")
	// Round robin would give 10 and 10; least_time measures the slow one
	// once (twice if the fast one's first measure was delayed).
	if peers[0].Connections < 18 || peers[0].Connections+peers[1].Connections != 20 {
		t.Errorf("sessions: fast %d, slow %d; want 19 and 1 (18 and 2 at worst)", peers[0].Connections, peers[1].Connections)
	}
}
