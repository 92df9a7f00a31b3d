package engine

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// splitStream is the stream block of the split_clients tests: NGINX's
// recipe for spreading a harness's upstream connections over several
// source addresses (issue 21), with shares that exercise the hundredths,
// a "*" line, and a log line of the variable.
func splitStream(listen, up, logPath string) string {
	return "stream {\n" +
		"split_clients \"${remote_addr}AAA\" $bindip {\n" +
		"    12.5% 127.0.0.2;\n    30% 127.0.0.3;\n    0.25% 127.0.0.4;\n    * 127.0.0.5;\n}\n" +
		"log_format sp '$remote_addr $bindip';\n" +
		"server { listen " + listen + "; proxy_pass " + up + "; proxy_bind $bindip; access_log " + logPath + " sp; }\n}\n"
}

// TestSplitClientsNginxDiff: the same split_clients block and proxy_bind
// on NGINX 1.22 and on tlsrelay; 60 clients from 60 loopback addresses
// connect to each in turn, and the upstream sees each client's session
// from the same source address through both (MurmurHash2, the shares'
// bounds and the "*" line as NGINX computes them), and tlsrelay's access
// log prints the variable.
func TestSplitClientsNginxDiff(t *testing.T) {
	testutil.NginxPath(t)
	const clients = 60
	run := func(proxy string) []string {
		up, sources := sourceRecorder(t)
		listen := testutil.FreeAddr(t)
		dir := t.TempDir()
		logPath := dir + "/split.log"
		stream := splitStream(listen, up, logPath)
		startProxy(t, proxy, dir, stream, listen, sources)
		n0 := len(sources())
		for i := 1; i <= clients; i++ {
			h := dialFrom(t, byte(10+i), listen)
			h.c.Close()
			testutil.WaitFor(t, fmt.Sprintf("%s's session %d upstream", proxy, i), 10*time.Second, func() bool { return len(sources()) == n0+i })
		}
		got := sources()[n0:]
		if proxy == "tlsrelay" {
			// A session logs when it ends, which may come after the
			// next one's start: match the lines by client address.
			byClient := map[string]string{}
			for _, l := range readLines(t, logPath, clients) {
				client, bind, _ := strings.Cut(l, " ")
				byClient[client] = bind
			}
			for i, src := range got {
				if c := fmt.Sprintf("127.0.0.%d", 11+i); byClient[c] != src {
					t.Errorf("access log $bindip for %s: %q, upstream saw %q", c, byClient[c], src)
				}
			}
		}
		return got
	}
	want, have := run("nginx"), run("tlsrelay")
	if strings.Join(have, " ") != strings.Join(want, " ") {
		t.Fatalf("sources by client:\ntlsrelay %q\nNGINX    %q", have, want)
	}
	seen := map[string]int{}
	for _, s := range have {
		seen[s]++
	}
	if len(seen) < 3 {
		t.Errorf("%d source addresses for %d clients: the test spreads too little to compare", len(seen), clients)
	}
	t.Logf("sources: %v", seen)
}

// TestMurmurHash2: the empty key hashes to 0, and the hash spreads keys
// evenly (TestSplitClientsNginxDiff compares it with NGINX's).
func TestMurmurHash2(t *testing.T) {
	if h := murmurHash2(""); h != 0 {
		t.Errorf("murmurHash2(\"\") = %#x, want 0", h)
	}
	// The hash spreads: 10,000 keys over 4 equal shares land within 3 %
	// of a quarter each.
	var n [4]int
	for i := range 10000 {
		n[murmurHash2(fmt.Sprintf("10.0.%d.%d", i/256, i%256))>>30]++
	}
	for q, c := range n {
		if c < 2250 || c > 2750 {
			t.Errorf("quarter %d of the hash range got %d of 10000 keys", q, c)
		}
	}
}
