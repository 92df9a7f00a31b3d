package testutil

import (
	"testing"
	"time"
)

// WaitFor checks cond every 5 ms until it holds, and fails the test (naming
// what it waited for) once d has passed. It is for conditions that no
// channel announces: counters other goroutines or processes advance, files
// another process writes.
func WaitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
