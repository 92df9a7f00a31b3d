package main

import "testing"

// TestHeadroomProcs: one P that no loop holds, and no more than the CPUs
// when they already leave one.
func TestHeadroomProcs(t *testing.T) {
	for _, c := range []struct{ procs, loops, want int }{
		{2, 1, 2}, // a CPU left for the dialers
		{2, 2, 3}, // a loop per CPU: one P more
		{4, 4, 5},
		{8, 2, 8},
		{1, 1, 2},
		{1, 3, 4}, // more loops than CPUs (worker_processes 3)
	} {
		if got := headroomProcs(c.procs, c.loops); got != c.want {
			t.Errorf("headroomProcs(%d, %d) = %d, want %d", c.procs, c.loops, got, c.want)
		}
	}
}
