package netns_test

import (
	"os"
	"strings"
	"testing"

	"github.com/tlsrelay/tlsrelay/internal/netns"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// TestSetup: a child in a new namespace gets its loopback up and the
// settings asked for; the host's stay as they were.
func TestSetup(t *testing.T) {
	if os.Getenv("NETNS_TEST_CHILD") == "1" {
		if err := netns.Setup(netns.Settings{TWReuse: 0, PortLow: 40000, PortHigh: 41023, MaxTWBuckets: 500000}); err != nil {
			t.Fatal(err)
		}
		for name, want := range map[string]string{"net/ipv4/tcp_tw_reuse": "0", "net/ipv4/ip_local_port_range": "40000\t41023", "net/ipv4/tcp_max_tw_buckets": "500000"} {
			b, err := os.ReadFile("/proc/sys/" + name)
			if err != nil || strings.TrimSpace(string(b)) != want {
				t.Fatalf("%s = %q (%v), want %q", name, b, err, want)
			}
		}
		return
	}
	testutil.NeedNetns(t)
	before, _ := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	cmd := netns.Command(os.Args[0], "-test.run=^TestSetup$", "-test.v")
	cmd.Env = append(os.Environ(), "NETNS_TEST_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "PASS") {
		t.Fatalf("child: %v\n%s", err, out)
	}
	after, _ := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if string(before) != string(after) {
		t.Errorf("the host's port range changed: %q, then %q", before, after)
	}
	if err := netns.Setup(netns.Settings{}); err == nil || !strings.Contains(err.Error(), "up already") {
		t.Errorf("Setup in the host's namespace: %v, want a refusal", err)
	}
}
