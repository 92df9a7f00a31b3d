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
	turn := int64(len(w.slots))
	for w.now < now {
		if now-w.now > turn {
			// An idle loop's wheel may lag by more than a turn: skip
			// the stretch before the next deadline instead of
			// visiting every slot of it again.
			if dl, ok := w.next(turn); !ok {
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

// next returns the deadline of the earliest armed timer if it is at most
// limit ticks (at most one turn) ahead of the wheel; ok is false when no
// timer is that close. It visits the slots ahead and their timers, so it
// is for an idle loop deciding how long it may sleep.
func (w *wheel) next(limit int64) (deadline int64, ok bool) {
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
