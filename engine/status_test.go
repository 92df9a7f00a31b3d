package engine

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// statusConf is the guide's server block over two echo upstreams and one
// that refuses connections, with the metrics listener and a writable API.
func statusConf(ups []*backend.Server, dead string) string {
	return "worker_processes 2;\nmetrics_listen 127.0.0.1:60;\napi write=on;\nevents { worker_connections 20000; }\nstream {\n" +
		"upstream backend {\n    server " + ups[0].Addr() + ";\n    server " + ups[1].Addr() + ";\n    server " + dead + " max_fails=1 fail_timeout=60s;\n}\n" +
		strings.Replace(guideServer, "%s", "", 1) + "}\n"
}

// TestStatusJSON: /status.json describes the process and every peer:
// states, active sessions, handshakes, the last error.
func TestStatusJSON(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 2, backend.Echo, nil)
	dead := backend.RefusingAddr(t)
	tb := startEngine(t, dir, statusConf(ups, dead))
	for range 6 {
		if _, err := echoOnce(tb.addr, []byte("status"), 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	code, body := apiDo(t, tb.eng.MetricsAddr(), "GET", "/status.json", "")
	var st statusJSON
	if code != 200 || json.Unmarshal([]byte(body), &st) != nil {
		t.Fatalf("GET /status.json: %d %s", code, body)
	}
	if st.Loops != 2 || st.Ready != "ready" || st.Sessions.Accepted != 6 || st.FDs.Open <= 0 || len(st.Servers) != 1 || len(st.Upstreams) != 1 {
		t.Fatalf("status %+v", st)
	}
	peers := st.Upstreams[0].Peers
	var handshakes uint64
	for _, p := range peers[:2] {
		handshakes += p.Full + p.Resumed
		if p.State != "up" {
			t.Errorf("peer %+v, want up", p)
		}
	}
	if handshakes != 6 {
		t.Errorf("handshakes %d, want 6: %+v", handshakes, peers)
	}
	if p := peers[2]; p.State != "banned" || !strings.Contains(p.LastError, "connection refused") || p.LastErrorAt == 0 {
		t.Errorf("refusing peer %+v, want banned with its last error", p)
	}
}

// TestStatusPageInBrowser: headless Chromium loads the page against a
// running tlsrelay with three peers, one refusing connections and one
// drained through the API, and the page shows each with its state, the
// refusal, and the process facts. STATUS_SCREENSHOT=path keeps a
// phone-sized screenshot (docs/status-page.png comes from it).
func TestStatusPageInBrowser(t *testing.T) {
	chromium := testutil.NeedProgram(t, "chromium", "chromium")
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 2, backend.Echo, nil)
	dead := backend.RefusingAddr(t)
	tb := startEngine(t, dir, statusConf(ups, dead))
	maddr := tb.eng.MetricsAddr()
	held := holdSession(t, tb.addr)
	defer held.c.Close()
	for range 6 {
		if _, err := echoOnce(tb.addr, []byte("status"), 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if code, body := apiDo(t, maddr, "PATCH", "/api/9/stream/upstreams/backend/servers/1", `{"drain":true}`); code != 200 {
		t.Fatalf("drain: %d %s", code, body)
	}
	profile := t.TempDir()
	args := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
		"--user-data-dir=" + profile, "--virtual-time-budget=3000"}
	out, err := exec.Command(chromium, append(args, "--dump-dom", "http://"+maddr+"/")...).Output()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, out)
	}
	dom := string(out)
	for _, want := range []string{ups[0].Addr(), ups[1].Addr(), dead, ">up<", ">draining<", ">banned<", "connection refused",
		"event loops", "sessions active", "backend", "descriptors"} {
		if !strings.Contains(dom, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}
	if shot := os.Getenv("STATUS_SCREENSHOT"); shot != "" {
		tmp := filepath.Join(t.TempDir(), "status.png")
		if out, err := exec.Command(chromium, append(args, "--hide-scrollbars", "--window-size=412,915", "--screenshot="+tmp, "http://"+maddr+"/")...).CombinedOutput(); err != nil {
			t.Fatalf("chromium screenshot: %v\n%s", err, out)
		}
		b, err := os.ReadFile(tmp)
		if err != nil || os.WriteFile(shot, b, 0o644) != nil {
			t.Fatalf("keeping the screenshot: %v", err)
		}
	}
}
