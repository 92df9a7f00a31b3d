package testutil

import (
	"fmt"
	"testing"
)

// recorder is a testing.TB that records Fatalf and Skipf instead of
// stopping.
type recorder struct {
	testing.TB
	fatal, skip string
}

func (r *recorder) Helper()                   {}
func (r *recorder) Fatalf(f string, a ...any) { r.fatal = fmt.Sprintf(f, a...) }
func (r *recorder) Skipf(f string, a ...any)  { r.skip = fmt.Sprintf(f, a...) }

// TestNeedProgram: a program on PATH is found; a missing one skips, and
// under CI=true fails instead; NeedFile the same.
func TestNeedProgram(t *testing.T) {
	if p := NeedProgram(t, "sh", "dash"); p == "" {
		t.Fatal("sh not found")
	}
	for _, ci := range []string{"", "true"} {
		t.Setenv("CI", ci)
		r := &recorder{TB: t}
		if p := NeedProgram(r, "no-such-program-tlsrelay", "none", "/nonexistent/x"); p != "" {
			t.Errorf("CI=%q: found %q", ci, p)
		}
		f := &recorder{TB: t}
		NeedFile(f, "/nonexistent/tlsrelay-file", "none")
		for _, got := range []*recorder{r, f} {
			if ci == "true" && (got.fatal == "" || got.skip != "") || ci == "" && (got.skip == "" || got.fatal != "") {
				t.Errorf("CI=%q: fatal %q, skip %q", ci, got.fatal, got.skip)
			}
		}
	}
}
