package bench

import (
	"os"
	"testing"
	"time"
)

func TestParseProcStat(t *testing.T) {
	tests := []struct {
		line      string
		pid, ppid int
		cpu       time.Duration
	}{
		{"1234 (nginx) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 130 0 0 20 0 1 0 5 0 0", 1234, 1, 3800 * time.Millisecond},
		// A command name with spaces and parentheses.
		{"77 (a (b) c) R 76 77 77 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 5 0 0", 77, 76, 30 * time.Millisecond},
	}
	for i, tt := range tests {
		st, err := parseProcStat([]byte(tt.line))
		if err != nil {
			t.Fatalf("#%d: %v", i, err)
		}
		if st.PID != tt.pid || st.PPID != tt.ppid || st.CPU != tt.cpu {
			t.Errorf("#%d: got %+v, want pid %d ppid %d cpu %v", i, st, tt.pid, tt.ppid, tt.cpu)
		}
	}
	for _, bad := range []string{"", "12 nocomm S 1", "12 (x) S 1 2"} {
		if _, err := parseProcStat([]byte(bad)); err == nil {
			t.Errorf("parseProcStat(%q): no error", bad)
		}
	}
}

func TestParseVmRSS(t *testing.T) {
	status := "Name:\tnginx\nVmPeak:\t  10000 kB\nVmRSS:\t    2048 kB\nThreads:\t1\n"
	got, err := parseVmRSS([]byte(status))
	if err != nil || got != 2048<<10 {
		t.Fatalf("got %d, %v; want %d", got, err, 2048<<10)
	}
	if _, err := parseVmRSS([]byte("Name:\tx\n")); err == nil {
		t.Error("no VmRSS: no error")
	}
}

func TestOwnProcess(t *testing.T) {
	pid := os.Getpid()
	st, err := ReadProcStat(pid)
	if err != nil {
		t.Fatal(err)
	}
	if st.PID != pid || st.PPID != os.Getppid() {
		t.Errorf("got %+v for pid %d ppid %d", st, pid, os.Getppid())
	}
	rss, err := ReadRSS(pid)
	if err != nil || rss <= 0 {
		t.Fatalf("rss %d, %v", rss, err)
	}
	kids, err := Children(os.Getppid())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, k := range kids {
		found = found || k == pid
	}
	if !found {
		t.Errorf("Children(%d) = %v, missing %d", os.Getppid(), kids, pid)
	}
}

// TestRunTimes: this process's threads have run, a busy loop adds to their
// sum, and a schedstat line parses to its first field.
func TestRunTimes(t *testing.T) {
	if ns, err := parseSchedstat([]byte("93261 344476 1\n")); err != nil || ns != 93261 {
		t.Fatalf("parseSchedstat = %d, %v; want 93261", ns, err)
	}
	if _, err := parseSchedstat([]byte("")); err == nil {
		t.Fatal("parseSchedstat accepted an empty line")
	}
	pid := os.Getpid()
	r0, err := RunTimes([]int{pid})
	if err != nil {
		t.Fatal(err)
	}
	if len(r0) == 0 {
		t.Fatal("no threads")
	}
	// Spin until the threads' sum has grown by 10 ms; without schedstat
	// counting, ten seconds of spinning would not get there.
	for deadline := time.Now().Add(10 * time.Second); ; {
		for start := time.Now(); time.Since(start) < time.Millisecond; {
		}
		r1, err := RunTimes([]int{pid})
		if err != nil {
			t.Fatal(err)
		}
		d := RunTimeSince(r0, r1)
		if d >= 10*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10 s of spinning added %v of run time", d)
		}
	}
}
