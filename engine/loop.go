package engine

import (
	"context"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/engine/errlog"
	"github.com/tlsrelay/tlsrelay/engine/memory"
	"github.com/tlsrelay/tlsrelay/engine/metrics"
	"github.com/tlsrelay/tlsrelay/engine/wheel"
)

// tick is the resolution of the per-loop timer wheels; pollTick the
// interval at which sessions waiting for a queue to drain are polled (gnet
// has no drained callback); idleTick how often the ticker wakes when no
// loop saw traffic since its last wake. Once a wake finds the engine
// idle, the ticker sleeps until the earliest timer of any loop, at most
// sleepMax: each wake costs a thread wake-up per loop and the runtime's
// own (sysmon), which is what an engine holding idle connections spends
// its CPU on.
const (
	tick     = 10 * time.Millisecond
	pollTick = time.Millisecond
	idleTick = 250 * time.Millisecond
	sleepMax = 2 * time.Second
	// scanAhead is how far (in ticks) a loop looks for its next timer
	// when it goes idle: beyond sleepMax, so that the answer is exact
	// whenever it matters.
	scanAhead = int64(4 * sleepMax / tick)
)

// loop is the engine's state for one gnet event loop. Everything in it is
// used only on that loop, except el (goroutine-safe by gnet's contract)
// and the atomics, which the ticker goroutine reads.
type loop struct {
	e       *Engine
	el      gnet.EventLoop
	idx     int
	wheel   *wheel.Wheel
	scratch []byte
	// cork collects the TLS records of one pump (side.cork).
	cork     []byte
	sessions int
	// refusedLogged is the tick of the last "worker_connections are not
	// enough" line (admit).
	refusedLogged int64
	// live is the head of the list of the loop's sessions that have not
	// ended (linked through session.prev/next).
	live  *session
	start time.Time
	// logScratch renders access-log lines.
	logScratch []byte
	// sockWrite, when set, replaces writeAll for the session's sockets:
	// the state machine's unit tests play the kernel with it. nil in
	// the engine.
	sockWrite func(fd int, p []byte) (int, error)

	// polled are the sessions waiting for a queue to drain; npolled is
	// its length for the ticker goroutine, which queues a poll only when
	// there is something to poll.
	polled     []*session
	pollSpare  []*session
	npolled    atomic.Int32
	wheelDue   atomic.Bool
	pollQueued atomic.Bool
	// active is set on traffic and cleared by the ticker.
	active atomic.Bool
	// armedMin is the earliest deadline (UnixNano) armed since the last
	// scan; nextAt the earliest deadline the last scan found within
	// scanAhead (0: none). The loop writes both; the ticker reads them to
	// decide how long it may sleep. scanNext: the ticker asks the loop to
	// scan its wheel when it next runs.
	armedMin, nextAt atomic.Int64
	scanNext         atomic.Bool
}

// newLoop makes the engine's state for the gnet loop el, the idx-th.
// Runs on el (its first conn), so that CPU pinning applies to el's thread.
func (e *Engine) newLoop(el gnet.EventLoop, idx int) *loop {
	lp := &loop{e: e, el: el, idx: idx, wheel: wheel.New(4096), scratch: make([]byte, 64<<10), cork: make([]byte, 0, 80<<10), start: time.Now()}
	e.pinLoop(idx)
	return lp
}

// nowTick is the current time in wheel ticks. The wheel's own now lags
// behind the clock by up to idleTick while the loop is idle (the ticker
// slows down), so traffic is stamped and timers are armed from the clock
// (or from the wheel, when something advanced it further, as tests do).
// Runs on the loop.
func (lp *loop) nowTick() int64 {
	return max(int64(time.Since(lp.start)/tick), lp.wheel.Now())
}

// arm arms a wheel timer d ticks from now (the clock's now, not the
// wheel's, which may lag) and wakes the ticker when it sleeps past the
// deadline. Runs on the loop.
func (lp *loop) arm(t *wheel.Timer, d int64) {
	// From the clock's now rounded up to a tick, so that the timer never
	// fires before d ticks have passed (and at most one tick after).
	cur := int64((time.Since(lp.start) + tick - 1) / tick)
	if lag := cur - lp.wheel.Now(); lag > 0 {
		d += lag
	}
	lp.wheel.Arm(t, d)
	at := lp.start.Add(time.Duration(t.Deadline()) * tick).UnixNano()
	if a := lp.armedMin.Load(); a == 0 || at < a {
		lp.armedMin.Store(at)
	}
	// After the store: a ticker that set sleepUntil later sees armedMin.
	if at < lp.e.sleepUntil.Load() {
		lp.e.kickTicker()
	}
}

// scan records when the loop's next timer is due, for the ticker (see
// armedMin). Runs on the loop.
func (lp *loop) scan() {
	at := int64(0)
	if dl, ok := lp.wheel.Next(scanAhead); ok {
		at = lp.start.Add(time.Duration(dl) * tick).UnixNano()
	}
	// nextAt before armedMin: the ticker reads armedMin first, so if it
	// sees armedMin cleared it sees this scan's nextAt.
	lp.nextAt.Store(at)
	lp.armedMin.Store(0)
	// A ticker that read the previous scan may be sleeping past this one
	// (it publishes sleepUntil before it reads nextAt).
	if at != 0 && at < lp.e.sleepUntil.Load() {
		lp.e.kickTicker()
	}
}

// touch records traffic on the loop for the ticker's pace. Runs on the
// loop; a load first keeps the common case a read.
func (lp *loop) touch() {
	if !lp.active.Load() {
		lp.active.Store(true)
	}
}

// addPolled puts s on the poll list. Runs on the loop.
func (lp *loop) addPolled(s *session) {
	lp.polled = append(lp.polled, s)
	lp.npolled.Store(int32(len(lp.polled)))
	if len(lp.polled) == 1 {
		lp.e.kickTicker()
	}
}

// runPolls polls every waiting session once. A session stays on the list
// when its poll says so, or when anything during the poll asked for one
// (armPoll: a pump that queued output toward a full socket, a pause): its
// flag is cleared first, so that armPoll puts it back rather than taking
// it for already listed. Runs on the loop.
func (lp *loop) runPolls() {
	list := lp.polled
	lp.polled = lp.pollSpare[:0]
	for i, s := range list {
		list[i] = nil
		s.polled = false
		if s.onPoll() && !s.polled {
			s.polled = true
			lp.polled = append(lp.polled, s)
		}
	}
	lp.pollSpare = list[:0]
	lp.npolled.Store(int32(len(lp.polled)))
}

// admit reports whether the loop may take one more session under
// worker_connections, counted as NGINX counts connections: each listening
// socket takes one in every loop, and a session two (its client and its
// upstream). A client over the limit is closed at once and logged, as
// NGINX does ("worker_connections are not enough"). Runs on the loop.
func (lp *loop) admit() bool {
	p := lp.e.plan.Load()
	wc := p.workerConns
	if wc <= 0 || 2*(lp.sessions+1)+p.listens <= wc {
		return true
	}
	lp.e.m.Refused()
	// Logged once a minute per loop: a flood of refusals would otherwise
	// fill the log (tlsrelay_sessions_refused_total counts them all).
	if now := lp.nowTick(); lp.refusedLogged == 0 || now-lp.refusedLogged >= lp.ticks(time.Minute) {
		lp.refusedLogged = now
		how := "raise worker_connections"
		if p.cfg.Main.WorkerConnections <= 0 {
			how = "it is the descriptor limit shared by the event loops: raise worker_rlimit_nofile (or `ulimit -n`)"
		}
		lp.e.log.Logf(errlog.LevelAlert, 0, "%d worker_connections are not enough: this event loop holds %d sessions (two connections each) and %d listening sockets; %s",
			wc, lp.sessions, p.listens, how)
	}
	return false
}

// link adds s to the loop's live sessions. Runs on the loop.
func (lp *loop) link(s *session) {
	s.next = lp.live
	if lp.live != nil {
		lp.live.prev = s
	}
	lp.live = s
	lp.sessions++
}

// unlink removes s from the loop's live sessions. Runs on the loop.
func (lp *loop) unlink(s *session) {
	if s.prev != nil {
		s.prev.next = s.next
	} else if lp.live == s {
		lp.live = s.next
	}
	if s.next != nil {
		s.next.prev = s.prev
	}
	s.prev, s.next = nil, nil
	lp.sessions--
}

// closeSessions ends every live session for which match is true, now:
// the proxy's own shutdown, logged with why and ended with the reason
// "shutdown". Runs on the loop.
func (lp *loop) closeSessions(match func(*session) bool, why string) int {
	n := 0
	for s := lp.live; s != nil; {
		next := s.next
		if match(s) {
			if lp.e.log.Enabled(errlog.LevelInfo) {
				lp.e.log.Logf(errlog.LevelInfo, s.id, "closing the session (%s), client: %s, server: %s", why, hostOf(s.remote), s.srv.name)
			}
			s.reason = metrics.ReasonShutdown
			s.finish(metrics.ReasonShutdown)
			n++
		}
		s = next
	}
	return n
}

// ticks converts a duration to wheel ticks, rounding up.
func (lp *loop) ticks(d time.Duration) int64 {
	return int64((d + tick - 1) / tick)
}

// sessionEnded runs on the loop when one of its sessions finished.
func (lp *loop) sessionEnded() {
	if lp.e.quitting.Load() && lp.e.m.Active() == 0 {
		lp.e.stopOnce()
	}
}

// Run advances the loop's wheel when due and polls the waiting sessions;
// it is the Runnable the ticker queues. Runs on the loop.
func (lp *loop) Run(context.Context) error {
	lp.pollQueued.Store(false)
	if len(lp.polled) > 0 {
		lp.runPolls()
	}
	if lp.wheelDue.Swap(false) {
		lp.wheel.Advance(int64(time.Since(lp.start) / tick))
	}
	if lp.scanNext.Swap(false) {
		lp.scan()
	}
	return nil
}

// tickLoops advances every loop's wheel each tick, on the loop itself. It
// is the ticker goroutine; it starts once the loops are known.
func (e *Engine) tickLoops() {
	select {
	case <-e.booted:
	case <-e.stopped:
		return
	}
	t := time.NewTimer(tick)
	defer t.Stop()
	lastWheel, lastFlush := time.Now(), time.Now()
	var flushAt time.Time // when an access-log buffer is next due (zero: none)
	mem := memory.NewKeeper(lastWheel, nil)
	quiet := 0 // consecutive wakes that found every loop idle
	for {
		select {
		case <-e.stopped:
			return
		case <-t.C:
		case <-e.kick:
		}
		now := time.Now()
		wheel := now.Sub(lastWheel) >= tick
		if wheel {
			lastWheel = now
		}
		if now.Sub(lastFlush) >= 100*time.Millisecond {
			lastFlush = now
			flushAt = e.flushLogs(now)
		}
		mem.Sessions(now, e.m.Accepted(), e.m.Active())
		next := idleTick
		idle := true
		for _, lp := range e.loops {
			if lp.npolled.Load() > 0 {
				next, idle = pollTick, false
			} else if lp.active.Swap(false) {
				next, idle = min(next, tick), false
			}
		}
		// Once idle, sleep until the earliest timer (what the loops
		// found when they last scanned, and what they armed since). The
		// first idle wake asks for the scans; from the second on, each
		// loop's scan ran while nothing happened, so it is current.
		if idle {
			quiet++
		} else {
			quiet = 0
		}
		scanned := quiet >= 2
		for _, lp := range e.loops {
			scanned = scanned && !lp.pollQueued.Load()
		}
		pending := mem.Pending()
		if idle && pending {
			next = min(next, memory.CheckEvery)
		}
		wake := now.Add(next)
		if scanned && !pending {
			wake = now.Add(sleepMax)
			// flushAt is current: idle wakes are further apart than
			// the flush check's 100 ms, so this wake made it.
			if !flushAt.IsZero() && flushAt.Before(wake) {
				wake = flushAt
			}
		}
		// Published before the loops' deadlines are read (see arm).
		e.sleepUntil.Store(wake.UnixNano())
		for _, lp := range e.loops {
			due := wheel
			for _, at := range [...]int64{lp.armedMin.Load(), lp.nextAt.Load()} {
				if at == 0 {
					continue
				}
				if at <= now.UnixNano() {
					due = true
				} else if at < wake.UnixNano() {
					wake = time.Unix(0, at)
				}
			}
			if due {
				lp.wheelDue.Store(true)
			} else if lp.npolled.Load() == 0 {
				continue
			}
			if idle {
				lp.scanNext.Store(true)
			}
			// One queued task at a time: a busy loop that has not run the
			// last one yet does not get another.
			if lp.pollQueued.CompareAndSwap(false, true) {
				lp.el.Execute(context.Background(), lp)
			}
		}
		e.sleepUntil.Store(wake.UnixNano())
		t.Reset(max(time.Until(wake), 0))
	}
}

// kickTicker wakes the ticker at once (a session started waiting on a
// queue). Safe from any goroutine.
func (e *Engine) kickTicker() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// lockLoops reports whether the loops run locked to their threads
// (LockOSThread): only when worker_cpu_affinity pins them, which is a
// property of the thread. A locked loop costs every time it yields: gnet's
// loop calls runtime.Gosched after each burst of events, and a locked
// goroutine that yields sends its thread to sleep and wakes it again
// through another one (stoplockedm, startlockedm: two futex wake-ups and
// two context switches). Unlocked, on the 2-core bench machine: 9 % less
// CPU per plain connection, 13 % per resumed TLS 1.2 one, 2-4 % per TLS
// 1.3 one (docs/benchmarks.md).
func lockLoops(aff conf.CPUAffinity) bool { return aff.Auto || len(aff.Masks) > 0 }

// pinLoop applies worker_cpu_affinity to the calling loop's thread (loops
// run with LockOSThread when it is set, see lockLoops). Runs on the loop.
func (e *Engine) pinLoop(i int) {
	aff := e.cfg().Main.CPUAffinity
	var set unix.CPUSet
	switch {
	case aff.Auto:
		set.Set(i % runtime.NumCPU())
	case len(aff.Masks) > 0:
		m := aff.Masks[i%len(aff.Masks)]
		for cpu := 0; cpu < 64; cpu++ {
			if m&(1<<cpu) != 0 {
				set.Set(cpu)
			}
		}
	default:
		return
	}
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		e.log.Logf(errlog.LevelAlert, 0, "sched_setaffinity() failed: %v", err)
	}
}
