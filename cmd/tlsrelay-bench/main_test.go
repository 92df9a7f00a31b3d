package main

import (
	"strings"
	"testing"
)

func TestChooseKinds(t *testing.T) {
	ks, err := chooseKinds("tls1.3 ecdsa-p256 resumed, TLS1.2 rsa-2048 full")
	if err != nil || len(ks) != 2 || ks[0].String() != "TLS1.3 ecdsa-p256 resumed" || ks[1].String() != "TLS1.2 rsa-2048 full" {
		t.Fatalf("got %v, %v", ks, err)
	}
	if ks, err := chooseKinds(""); err != nil || len(ks) != 0 {
		t.Fatalf("empty: got %v, %v", ks, err)
	}
	if _, err := chooseKinds("TLS1.4 full"); err == nil {
		t.Fatal("unknown kind: no error")
	}
}

func TestChoosePeersWithout(t *testing.T) {
	peers, infos, notes := choosePeers("bin/tlsrelay", "none", "", "/no/such/haproxy")
	if len(peers) != 1 || peers[0].Name() != "tlsrelay" {
		t.Fatalf("peers %v", peers)
	}
	if len(infos) != 3 || infos[1].Available || infos[2].Available {
		t.Fatalf("infos %+v", infos)
	}
	if !strings.Contains(infos[2].Note, "make bench-deps") {
		t.Errorf("a missing HAProxy should say how to add it: %q", infos[2].Note)
	}
	if len(notes) != 2 {
		t.Errorf("notes %q", notes)
	}
}

// TestRateChildArgs: the hidden -rate-child takes exactly the spec file,
// and a spec it cannot read is an error, not a silent success.
func TestRateChildArgs(t *testing.T) {
	if err := rateChildMain(nil); err == nil {
		t.Error("no spec file: no error")
	}
	if err := rateChildMain([]string{"a", "b"}); err == nil {
		t.Error("two arguments: no error")
	}
	if err := rateChildMain([]string{t.TempDir() + "/none.json"}); err == nil || !strings.Contains(err.Error(), "reading the rate spec") {
		t.Errorf("a missing spec: %v", err)
	}
}
