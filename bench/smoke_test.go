package bench

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// TestSmokeNginx runs one tiny round of each measured row against NGINX,
// with a tlsrelay that cannot start, and checks the report: NGINX numbers,
// tlsrelay "n/a (error: ...)" cells.
func TestSmokeNginx(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end smoke test")
	}
	ng := testutil.NeedProgram(t, "nginx", "nginx", "/usr/sbin/nginx")
	mod := "/usr/lib/nginx/modules/ngx_stream_module.so"
	if _, err := os.Stat(mod); err != nil {
		mod = ""
	}
	dir := t.TempDir()
	res, err := Run(t.Context(), Options{
		Peers: []Peer{Tlsrelay{Path: filepath.Join(dir, "no-such-tlsrelay")}, Nginx{Path: ng, Module: mod}},
		Dir:   dir, Rounds: 1, LoadWorkers: 4, Quick: true,
		Only:              map[string]bool{RowHandshake: true, RowThroughput: true, RowMemory: true},
		Kinds:             []HandshakeKind{{Version: tls.VersionTLS13, Key: pki.ECDSAP256, Resumed: true}},
		HandshakeDuration: 300 * time.Millisecond,
		StreamBytes:       4 << 20,
		Held:              []int{20, 50},
	})
	if err != nil {
		t.Fatal(err)
	}
	res.Peers = []PeerInfo{{Name: "tlsrelay", Available: true}, {Name: "NGINX", Available: true}}
	hc := res.Handshake[0].Cells["NGINX"]
	if hc.Err != "" || hc.CPUMicros.Median <= 0 || hc.ConnsPerSec.Median <= 0 {
		t.Errorf("NGINX handshake cell: %+v", hc)
	}
	if hc.HitRate.Median < 0.5 {
		t.Errorf("NGINX resumed %.0f%% of upstream handshakes with reuse on", 100*hc.HitRate.Median)
	}
	if tc := res.Throughput[0].Cells["NGINX"]; tc.Err != "" || tc.MiBps.Median <= 0 {
		t.Errorf("NGINX throughput cell: %+v", tc)
	}
	if mc := res.Memory[1].Cells["NGINX"]; mc.Err != "" || !mc.KiBPerConn.Valid() {
		t.Errorf("NGINX memory cell: %+v", mc)
	}
	if c := res.Handshake[0].Cells["tlsrelay"]; c.Err == "" || c.CPUMicros.Valid() {
		t.Errorf("tlsrelay cell without a binary: %+v", c)
	}
	if err := WriteReport(dir, res); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(dir, ReportFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "n/a (error: starting tlsrelay") {
		t.Errorf("report has no tlsrelay error cell:\n%s", md)
	}
}
