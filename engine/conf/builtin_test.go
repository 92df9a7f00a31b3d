package conf

import (
	"strings"
	"testing"
)

// TestBuiltinLogFormat: the built-in format is there without a
// log_format, is used by name, and -T does not print it (its output reads
// back, where a printed one would be a duplicate).
func TestBuiltinLogFormat(t *testing.T) {
	cfg, _, err := Parse("t.conf", []byte("stream { server { listen 1; proxy_pass 127.0.0.1:2; access_log /tmp/a tlsrelay; } }"), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f := cfg.Stream.LogFormats[BuiltinLogFormat]
	if f == nil || !f.Builtin || f.Format != BuiltinLogFormatText || !f.Template.HasVars() {
		t.Fatalf("built-in format %+v", f)
	}
	out := cfg.Format()
	if strings.Contains(out, "log_format") || !strings.Contains(out, "access_log /tmp/a tlsrelay") {
		t.Errorf("-T output:\n%s", out)
	}
	if _, _, err := Parse("t.conf", []byte(out), LoadOptions{}); err != nil {
		t.Errorf("-T output does not read back: %v\n%s", err, out)
	}
}

// TestConnectionsPerLoop: worker_connections in force, the directive's or
// derived from the descriptor limit.
func TestConnectionsPerLoop(t *testing.T) {
	for _, tc := range []struct {
		wc, loops int
		nofile    uint64
		want      int
	}{
		{512, 1, 1 << 20, 512},
		{0, 2, 1 << 20, (1<<20 - 64) / 2},
		{0, 4, 1024, (1024 - 64) / 4},
		{0, 1, 100, 64},
		{0, 2, 0, 0},
	} {
		m := Main{WorkerConnections: tc.wc, WorkerProcesses: tc.loops}
		if got := m.ConnectionsPerLoop(tc.nofile); got != tc.want {
			t.Errorf("worker_connections %d, %d loops, nofile %d: %d, want %d", tc.wc, tc.loops, tc.nofile, got, tc.want)
		}
	}
}
