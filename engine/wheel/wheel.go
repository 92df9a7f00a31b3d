package wheel

// A timer wheel per event loop: gnet has no timers, and a runtime timer per
// connection would cost memory and a goroutine wake-up per expiry. The wheel
// is advanced by a ticker goroutine that runs each tick on the loop through
// EventLoop.Execute, so timers fire on the loop that owns their session.
//
// Timers are intrusive (a session embeds its timer), so arming one
// allocates nothing and cancelling one is O(1). Deadlines are coarse: a
// timer fires on the first tick at or after its deadline, so a timeout is
// late by at most one tick.

// Timer is one wheel entry. The zero value is disarmed; set Fire before
// arming it.
type Timer struct {
	deadline   int64 // in ticks
	next, prev *Timer
	armed      bool
	// Fire is called when the timer is due, on the wheel's goroutine
	// (inside Advance). It may arm or disarm any timer of the wheel.
	Fire func()
}

// Armed reports whether t is waiting to fire.
func (t *Timer) Armed() bool { return t.armed }

// Deadline is the tick t fires at (or last fired at).
func (t *Timer) Deadline() int64 { return t.deadline }

// Wheel is a hashed timing wheel. It is used only from the goroutine that
// owns it.
type Wheel struct {
	slots []Timer // sentinel heads of circular lists
	mask  int64
	now   int64 // current tick
	count int
	due   []*Timer // scratch for Advance
}

// New returns a wheel of size slots at tick 0.
func New(size int) *Wheel {
	// size must be a power of two.
	w := &Wheel{slots: make([]Timer, size), mask: int64(size - 1)}
	for i := range w.slots {
		h := &w.slots[i]
		h.next, h.prev = h, h
	}
	return w
}

// Now is the wheel's current tick: the last one Advance reached.
func (w *Wheel) Now() int64 { return w.now }

// Len is the number of armed timers.
func (w *Wheel) Len() int { return w.count }

// Arm (re)schedules t to fire d ticks (at least one) after Now.
func (w *Wheel) Arm(t *Timer, d int64) {
	if t.armed {
		w.Disarm(t)
	}
	if d < 1 {
		d = 1
	}
	t.deadline = w.now + d
	h := &w.slots[t.deadline&w.mask]
	t.prev = h.prev
	t.next = h
	h.prev.next = t
	h.prev = t
	t.armed = true
	w.count++
}

// Disarm cancels t if it is armed.
func (w *Wheel) Disarm(t *Timer) {
	if !t.armed {
		return
	}
	t.prev.next = t.next
	t.next.prev = t.prev
	t.next, t.prev = nil, nil
	t.armed = false
	w.count--
}

// Advance moves the wheel to tick now, firing every timer that is due.
// Timers armed by a firing callback for the current tick fire on the next
// Advance.
func (w *Wheel) Advance(now int64) {
	turn := int64(len(w.slots))
	for w.now < now {
		if now-w.now > turn {
			// An idle loop's wheel may lag by more than a turn: skip
			// the stretch before the next deadline instead of
			// visiting every slot of it again.
			if dl, ok := w.Next(turn); !ok {
				w.now += turn
				continue
			} else if dl-1 > w.now {
				w.now = dl - 1
			}
		}
		w.now++
		h := &w.slots[w.now&w.mask]
		// Detach the slot's list first so callbacks may re-arm freely.
		due := w.due[:0]
		for t := h.next; t != h; {
			next := t.next
			if t.deadline <= w.now {
				w.Disarm(t)
				due = append(due, t)
			}
			t = next
		}
		for i, t := range due {
			due[i] = nil
			t.Fire()
		}
		w.due = due[:0]
	}
}

// Next returns the deadline of the earliest armed timer if it is at most
// limit ticks (at most one turn) ahead of the wheel; ok is false when no
// timer is that close. It visits the slots ahead and their timers, so it
// is for an idle loop deciding how long it may sleep.
func (w *Wheel) Next(limit int64) (deadline int64, ok bool) {
	if w.count == 0 {
		return 0, false
	}
	limit = min(limit, int64(len(w.slots)))
	for d := int64(1); d <= limit; d++ {
		tk := w.now + d
		h := &w.slots[tk&w.mask]
		for t := h.next; t != h; t = t.next {
			// A timer due within one turn is in its deadline's slot;
			// the others there are a turn or more ahead.
			if t.deadline <= tk {
				return t.deadline, true
			}
		}
	}
	return 0, false
}
