package engine

import "testing"

func TestWheel(t *testing.T) {
	w := newWheel(8)
	var fired []int
	mk := func(id int) *timer {
		return &timer{fire: func() { fired = append(fired, id) }}
	}
	a, b, c, d := mk(1), mk(2), mk(3), mk(4)
	w.arm(a, 3)
	w.arm(b, 1)
	w.arm(c, 20) // wraps the 8-slot wheel twice
	w.arm(d, 3)
	w.disarm(d)
	w.advance(2)
	if len(fired) != 1 || fired[0] != 2 {
		t.Fatalf("after 2 ticks fired %v, want [2]", fired)
	}
	w.advance(3)
	if len(fired) != 2 || fired[1] != 1 {
		t.Fatalf("after 3 ticks fired %v, want [2 1]", fired)
	}
	w.arm(a, 5) // re-arm a fired timer
	w.arm(a, 6) // re-arm an armed one: only the later deadline counts
	w.advance(19)
	if len(fired) != 3 || fired[2] != 1 {
		t.Fatalf("after 19 ticks fired %v, want [2 1 1]", fired)
	}
	w.advance(20)
	if len(fired) != 4 || fired[3] != 3 {
		t.Fatalf("after 20 ticks fired %v, want [2 1 1 3]", fired)
	}
	if w.count != 0 {
		t.Fatalf("count = %d after all fired", w.count)
	}
}

func TestWheelRearmFromCallback(t *testing.T) {
	w := newWheel(4)
	n := 0
	var tm timer
	tm.fire = func() {
		n++
		if n < 3 {
			w.arm(&tm, 1)
		}
	}
	w.arm(&tm, 1)
	w.advance(10)
	if n != 3 {
		t.Fatalf("fired %d times, want 3", n)
	}
}
