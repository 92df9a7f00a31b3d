package bench

// The memory rows: RSS per held connection after a burst and after the
// connections close, and idle CPU while they are held.

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/pki"
)

func (r *runner) memory() error {
	b, err := r.backends(pki.ECDSAP256, "echo", 0)
	if err != nil {
		return fmt.Errorf("starting echo backends: %w", err)
	}
	defer b.Close()
	peers := r.withBaseline(r.o.Peers...)
	rows := make([]MemoryRow, len(r.o.Held))
	for j, n := range r.o.Held {
		rows[j] = MemoryRow{Held: n, Cells: map[string]*MemoryCell{}}
		for _, p := range peers {
			rows[j].Cells[p.Name()] = &MemoryCell{}
		}
	}
	for i := 0; i < r.o.Rounds; i++ {
		for _, p := range order(peers, i) {
			if err := r.ctx.Err(); err != nil {
				return err
			}
			label := fmt.Sprintf("memory %v idle conns · %s · round %d/%d", r.o.Held, p.Name(), i+1, r.o.Rounds)
			r.o.Step(label, false, "")
			mrs := r.memoryRound(p, b)
			outcome := ""
			for j := range rows {
				rows[j].Cells[p.Name()].Rounds = append(rows[j].Cells[p.Name()].Rounds, mrs[j])
				if mrs[j].Err != "" {
					outcome += fmt.Sprintf("%d: error: %s; ", r.o.Held[j], mrs[j].Err)
				} else {
					outcome += fmt.Sprintf("%d: %.1f KiB/conn; ", r.o.Held[j], mrs[j].KiBPerConn)
				}
			}
			r.o.Step(label, true, outcome)
			quiesce(b, 10*time.Second)
		}
	}
	for j := range rows {
		for _, c := range rows[j].Cells {
			var kib, idle, idle0, warm, after []float64
			var errs []string
			for _, rd := range c.Rounds {
				if rd.Err != "" {
					errs = append(errs, rd.Err)
					continue
				}
				kib = append(kib, rd.KiBPerConn)
				idle = append(idle, rd.IdleCPUPct)
				idle0 = append(idle0, rd.BaselineIdleCPUPct)
				warm = append(warm, rd.BaselineMiB)
				if rd.ClosedMiB > 0 {
					after = append(after, rd.ClosedMiB)
				}
			}
			c.KiBPerConn, c.Err = Summarize(kib), cellError(errs, len(c.Rounds))
			c.IdleCPUPct, c.BaselineIdleCPUPct = Summarize(idle), Summarize(idle0)
			c.BurstMiB, c.ClosedMiB = Summarize(warm), Summarize(after)
		}
	}
	r.res.Memory = append(r.res.Memory, rows...)
	return nil
}

// memoryRound holds r.o.Held connections (in increasing steps) through one
// proxy and returns one result per count.
func (r *runner) memoryRound(p Peer, b Backends) []MemoryRound {
	out := make([]MemoryRound, len(r.o.Held))
	fail := func(from int, err error) []MemoryRound {
		for j := from; j < len(out); j++ {
			out[j].Err = err.Error()
		}
		return out
	}
	spec, err := r.spec(p, pki.ECDSAP256, tls.VersionTLS13, true, b.Addrs())
	if err != nil {
		return fail(0, err)
	}
	in, err := p.Start(spec)
	if err != nil {
		return fail(0, err)
	}
	defer in.Stop()
	warm := RunConnLoad(r.ctx, ConnLoad{Addr: spec.Listen, Workers: r.o.LoadWorkers,
		MaxConns: 8 * r.o.LoadWorkers, Duration: 10 * time.Second})
	if warm.Conns == 0 {
		return fail(0, fmt.Errorf("warm-up failed: %w", warm.FirstErr))
	}
	quiesce(b, 2*time.Second)
	time.Sleep(300 * time.Millisecond)
	base, err := in.RSS()
	if err != nil {
		return fail(0, err)
	}
	idle0, err := idleCPU(in, r.idleWindow())
	if err != nil {
		return fail(0, err)
	}
	var h Holder
	defer h.Close()
	for j, n := range r.o.Held {
		ctx, cancel := context.WithTimeout(r.ctx, 90*time.Second)
		err := h.Open(ctx, spec.Listen, n-h.Len(), 32)
		cancel()
		if err != nil {
			return fail(j, fmt.Errorf("holding %d connections (%d open): %w", n, h.Len(), err))
		}
		time.Sleep(500 * time.Millisecond)
		rss, err := in.RSS()
		if err != nil {
			return fail(j, err)
		}
		idle, err := idleCPU(in, r.idleWindow())
		if err != nil {
			return fail(j, err)
		}
		out[j] = MemoryRound{
			BaselineMiB: float64(base) / (1 << 20), HeldMiB: float64(rss) / (1 << 20),
			KiBPerConn:         float64(rss-base) / 1024 / float64(n),
			BaselineIdleCPUPct: idle0, IdleCPUPct: idle,
		}
	}
	// The held connections close at once, as a gateway's clients may
	// after an outage: what the proxy keeps afterwards.
	h.Close()
	time.Sleep(r.settleWindow())
	if rss, err := in.RSS(); err == nil {
		out[len(out)-1].ClosedMiB = float64(rss) / (1 << 20)
	}
	return out
}

// settleWindow is how long a memory round waits after the held
// connections closed before it reads the RSS: 3s, quick 1s.
func (r *runner) settleWindow() time.Duration {
	if r.o.Quick {
		return time.Second
	}
	return 3 * time.Second
}

// idleWindow is how long idle CPU is sampled: 2s, quick 1s.
func (r *runner) idleWindow() time.Duration {
	if r.o.Quick {
		return time.Second
	}
	return 2 * time.Second
}

// idleCPU returns the proxy's CPU use over window, in percent of one core,
// while nothing is sent through it; from the threads' run times (ns), as
// utime+stime would round a couple of seconds of an idle proxy to 0 or
// 0.5 %.
func idleCPU(in *Instance, window time.Duration) (float64, error) {
	pids := in.PIDs()
	r0, err := RunTimes(pids)
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	time.Sleep(window)
	r1, err := RunTimes(pids)
	if err != nil {
		return 0, err
	}
	return 100 * RunTimeSince(r0, r1).Seconds() / time.Since(t0).Seconds(), nil
}
