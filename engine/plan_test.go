package engine

import (
	"io"
	"testing"

	"github.com/tlsrelay/tlsrelay/engine/errlog"
)

// TestPlanStartStop: a plan's background work starts once and stops in
// its two steps, each part once: what serves new sessions when the plan
// is retired, the rest when it is freed with its last session; a plan
// freed before it started (a failed build or reload) never starts.
func TestPlanStartStop(t *testing.T) {
	e := &Engine{log: errlog.New(io.Discard, errlog.LevelError)}

	p := &plan{logs: newLogSet(nil)}
	p.free()
	p.start(e)
	if p.started || p.stopWatch != nil {
		t.Fatal("a plan freed before it started started")
	}

	p = &plan{logs: newLogSet(nil)}
	p.start(e)
	if !p.started {
		t.Fatal("start did not start")
	}
	stopWatch, stopServing := p.stopWatch, p.stopServing
	var watch, serving, health int
	p.stopWatch = func() { watch++; stopWatch() }
	p.stopServing = func() { serving++; stopServing() }
	p.stopHealth = func() { health++ }
	p.start(e) // a second start changes nothing
	p.sessionStarted()
	p.retire()
	if serving != 1 || health != 1 || watch != 0 || !p.warmStopped {
		t.Fatalf("retired: serving stopped %d, health %d, warm %v, watchers %d; want 1, 1, true, 0", serving, health, p.warmStopped, watch)
	}
	p.stop(stopNew)
	p.sessionEnded() // the last session: freed
	p.free()
	p.stop(stopAll)
	if serving != 1 || health != 1 || watch != 1 {
		t.Fatalf("freed: serving stopped %d, health %d, watchers %d; want 1 each", serving, health, watch)
	}
}
