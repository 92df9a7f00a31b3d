package wheel

import (
	"slices"
	"testing"
)

func TestWheel(t *testing.T) {
	w := New(8)
	var fired []int
	mk := func(id int) *Timer {
		return &Timer{Fire: func() { fired = append(fired, id) }}
	}
	a, b, c, d := mk(1), mk(2), mk(3), mk(4)
	w.Arm(a, 3)
	w.Arm(b, 1)
	w.Arm(c, 20) // wraps the 8-slot wheel twice
	w.Arm(d, 3)
	w.Disarm(d)
	w.Advance(2)
	if len(fired) != 1 || fired[0] != 2 {
		t.Fatalf("after 2 ticks fired %v, want [2]", fired)
	}
	w.Advance(3)
	if len(fired) != 2 || fired[1] != 1 {
		t.Fatalf("after 3 ticks fired %v, want [2 1]", fired)
	}
	w.Arm(a, 5) // re-arm a fired timer
	w.Arm(a, 6) // re-arm an armed one: only the later deadline counts
	w.Advance(19)
	if len(fired) != 3 || fired[2] != 1 {
		t.Fatalf("after 19 ticks fired %v, want [2 1 1]", fired)
	}
	w.Advance(20)
	if len(fired) != 4 || fired[3] != 3 {
		t.Fatalf("after 20 ticks fired %v, want [2 1 1 3]", fired)
	}
	if w.count != 0 {
		t.Fatalf("count = %d after all fired", w.count)
	}
}

func TestWheelRearmFromCallback(t *testing.T) {
	w := New(4)
	n := 0
	var tm Timer
	tm.Fire = func() {
		n++
		if n < 3 {
			w.Arm(&tm, 1)
		}
	}
	w.Arm(&tm, 1)
	w.Advance(10)
	if n != 3 {
		t.Fatalf("fired %d times, want 3", n)
	}
}

// TestWheelAdvanceFar: a wheel that lags by more than a turn (an idle
// loop's) fires what is due as advancing tick by tick does: in deadline
// order, each callback seeing the wheel at its own deadline, re-arms made
// by callbacks within the same advance.
func TestWheelAdvanceFar(t *testing.T) {
	for _, far := range []bool{false, true} {
		w := New(8)
		var got []int64
		var a, b, c, r Timer
		n := 0
		for _, tm := range []*Timer{&a, &b, &c} {
			tm.Fire = func() { got = append(got, w.now) }
		}
		r.Fire = func() {
			got = append(got, -w.now)
			if n++; n < 3 {
				w.Arm(&r, 2)
			}
		}
		w.Arm(&c, 30)
		w.Arm(&a, 3)
		w.Arm(&b, 17)
		w.Arm(&r, 5)
		var later Timer
		later.Fire = func() { t.Error("a timer past the advance fired") }
		w.Arm(&later, 41)
		if far {
			w.Advance(40) // five turns at once
		} else {
			for i := int64(1); i <= 40; i++ {
				w.Advance(i)
			}
		}
		want := []int64{3, -5, -7, -9, 17, 30}
		if !slices.Equal(got, want) {
			t.Errorf("far=%v: fired at %v, want %v (negative: the re-arming timer)", far, got, want)
		}
		if w.now != 40 || w.count != 1 {
			t.Errorf("far=%v: now %d, %d armed; want 40, 1", far, w.now, w.count)
		}
	}
}

// TestWheelNext: next finds the earliest deadline within its limit,
// whether its slot is ahead in this turn or shares a slot with timers of
// later turns.
func TestWheelNext(t *testing.T) {
	w := New(16)
	if _, ok := w.Next(16); ok {
		t.Fatal("an empty wheel has a next timer")
	}
	var a, b, c Timer
	for _, tm := range []*Timer{&a, &b, &c} {
		tm.Fire = func() {}
	}
	w.Advance(5)
	w.Arm(&a, 16+3) // slot of tick 8 in the next turn
	if _, ok := w.Next(16); ok {
		t.Fatal("a timer a turn ahead counted as next")
	}
	w.Arm(&b, 3) // tick 8, same slot as a
	w.Arm(&c, 9) // tick 14
	for _, tc := range []struct {
		limit int64
		want  int64
		ok    bool
	}{{2, 0, false}, {3, 8, true}, {16, 8, true}, {100, 8, true}} {
		got, ok := w.Next(tc.limit)
		if got != tc.want || ok != tc.ok {
			t.Errorf("next(%d) = %d, %v; want %d, %v", tc.limit, got, ok, tc.want, tc.ok)
		}
	}
	w.Disarm(&b)
	if got, ok := w.Next(16); !ok || got != 14 {
		t.Errorf("after disarming the first, next = %d, %v; want 14", got, ok)
	}
}
