package bench

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// Progress reports the run's steps: a one-line bar redrawn in place when
// the output is a terminal, one log line per finished step otherwise.
type Progress struct {
	mu    sync.Mutex
	w     io.Writer
	tty   bool
	total int
	done  int
	start time.Time
}

// NewProgress writes to w; tty selects the redrawn bar.
func NewProgress(w io.Writer, tty bool) *Progress {
	return &Progress{w: w, tty: tty, start: time.Now()}
}

// IsTerminal reports whether f is a character device (a terminal).
func IsTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// SetTotal sets the number of steps.
func (p *Progress) SetTotal(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total = n
}

// Step is Options.Step: a step starts (done false) or ends with an outcome.
// Crypto and micro-benchmark steps only start; each start after the first
// of those counts the previous one as done.
func (p *Progress) Step(label string, done bool, outcome string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if done || !strings.Contains(label, "·") {
		p.done++
	}
	if p.tty {
		p.drawLocked(label)
		return
	}
	if done {
		fmt.Fprintf(p.w, "[%d/%d %s] %s: %s\n", p.done, p.total, time.Since(p.start).Round(time.Second), label, outcome)
	} else if !strings.Contains(label, "·") {
		fmt.Fprintf(p.w, "[%d/%d %s] %s\n", p.done, p.total, time.Since(p.start).Round(time.Second), label)
	}
}

func (p *Progress) drawLocked(label string) {
	const width = 30
	filled := 0
	if p.total > 0 {
		filled = width * min(p.done, p.total) / p.total
	}
	bar := strings.Repeat("█", filled) + strings.Repeat("░", width-filled)
	if r := []rune(label); len(r) > 60 {
		label = string(r[:60]) + "…"
	}
	fmt.Fprintf(p.w, "\r\033[K%s %d/%d %s %s", bar, p.done, p.total, time.Since(p.start).Round(time.Second), label)
}

// Finish ends the bar's line.
func (p *Progress) Finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		fmt.Fprintln(p.w)
	}
}
