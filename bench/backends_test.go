package bench

import (
	"bufio"
	"encoding/json"
	"io"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
)

// TestServeBackends drives the child protocol over pipes: addresses first,
// then one stats line per "stats" request, and a clean end at EOF.
func TestServeBackends(t *testing.T) {
	m, err := WriteMaterial(t.TempDir(), pki.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	spec := BackendSpec{Count: 2, CertFile: m.Files.ServerCert, KeyFile: m.Files.ServerKey, CAFile: m.Files.CA}
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- ServeBackends(spec, inR, outW)
		outW.Close()
	}()
	rd := bufio.NewReader(outR)
	var h hello
	line, err := rd.ReadBytes('\n')
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(line, &h); err != nil || len(h.Addrs) != 2 {
		t.Fatalf("hello %q: %v", line, err)
	}
	// A connection that is not TLS counts as accepted and as a failed
	// handshake.
	if err := CheckEcho(h.Addrs[0], time.Second); err == nil {
		t.Error("plaintext echo through a TLS backend worked")
	}
	if _, err := io.WriteString(inW, "stats\n"); err != nil {
		t.Fatal(err)
	}
	line, err = rd.ReadBytes('\n')
	if err != nil {
		t.Fatal(err)
	}
	var st backend.Stats
	if err := json.Unmarshal(line, &st); err != nil || st.Accepted != 1 {
		t.Errorf("stats %q: %v", line, err)
	}
	inW.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeBackends: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeBackends did not return at EOF")
	}
}
