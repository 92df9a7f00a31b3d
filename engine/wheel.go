package engine

// A timer wheel per event loop: gnet has no timers, and a runtime timer per
// connection would cost memory and a goroutine wake-up per expiry. The wheel
// is advanced by a ticker goroutine that runs each tick on the loop through
// EventLoop.Execute, so timers fire on the loop that owns their session.
//
// Timers are intrusive (a session embeds its timer), so arming one
// allocates nothing and cancelling one is O(1). Deadlines are coarse: a
// timer fires on the first tick at or after its deadline, so a timeout is
// late by at most one tick.

// timer is one wheel entry. The zero value is disarmed.
type timer struct {
	deadline   int64 // in ticks
	next, prev *timer
	armed      bool
	fire       func() // runs on the loop
}

// wheel is a hashed timing wheel. It is used only from its loop.
type wheel struct {
	slots []timer // sentinel heads of circular lists
	mask  int64
	now   int64 // current tick
	count int
	due   []*timer // scratch for advance
}

func newWheel(size int) *wheel {
	// size must be a power of two.
	w := &wheel{slots: make([]timer, size), mask: int64(size - 1)}
	for i := range w.slots {
		h := &w.slots[i]
		h.next, h.prev = h, h
	}
	return w
}

// arm (re)schedules t to fire after d ticks (at least one).
func (w *wheel) arm(t *timer, d int64) {
	if t.armed {
		w.disarm(t)
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

// disarm cancels t if it is armed.
func (w *wheel) disarm(t *timer) {
	if !t.armed {
		return
	}
	t.prev.next = t.next
	t.next.prev = t.prev
	t.next, t.prev = nil, nil
	t.armed = false
	w.count--
}

// advance moves the wheel to tick now, firing every timer that is due.
// Timers armed by a firing callback for the current tick fire on the next
// advance.
func (w *wheel) advance(now int64) {
	for w.now < now {
		w.now++
		h := &w.slots[w.now&w.mask]
		// Detach the slot's list first so callbacks may re-arm freely.
		due := w.due[:0]
		for t := h.next; t != h; {
			next := t.next
			if t.deadline <= w.now {
				w.disarm(t)
				due = append(due, t)
			}
			t = next
		}
		for i, t := range due {
			due[i] = nil
			t.fire()
		}
		w.due = due[:0]
	}
}
