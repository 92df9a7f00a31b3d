package engine

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/engine/errlog"
	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
)

// soakFor is the soak's length: go test -run TestSoak ./engine -soak=10m
// (after the package: go test hands the test binary the flags it does not
// know only there). Without it the soak runs 20 s (skipped under -short).
var soakFor = flag.Duration("soak", 0, "run TestSoak for this long (default 20s; skipped with -short unless set)")

// soakSample is one reading of the process during the soak.
type soakSample struct {
	at          time.Duration
	fds, gorout int
	rss         int64
	active      int64
}

// TestSoak: mixed traffic for the soak's length (short sessions, long
// transfers checked by SHA-256, idle holds) with a reload every 30 s (a
// quarter of the soak when shorter). No session that should live is lost:
// every short and long session succeeds, every held session echoes after
// every reload and at the end. Descriptors, goroutines and RSS do not grow
// between the first and the last stretch (a minute, or a quarter of a
// shorter soak): the medians of their samples are compared.
func TestSoak(t *testing.T) {
	d := *soakFor
	if d == 0 {
		if testing.Short() {
			t.Skip("the soak runs 20 s; -soak=DURATION runs it under -short too")
		}
		d = 20 * time.Second
	}
	reloadEvery := min(30*time.Second, d/4)
	window := min(time.Minute, d/4)

	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 3, backend.Echo, nil)
	confs := []string{guideConf(ups, "proxy_timeout 1h;"), guideConf(ups, "proxy_timeout 59m;")}
	tb := startEngine(t, dir, confs[0])
	// Info lines (two per session) would pile up in the test's log
	// buffer and pass for growth; errors still show.
	tb.eng.log.SetLevel(errlog.LevelNotice)

	const holds = 50
	held := make([]*heldSession, holds)
	for i := range held {
		held[i] = holdSession(t, tb.addr)
	}

	var (
		shortOK, longOK, longBytes atomic.Int64
		failures                   atomic.Int64
		firstErr                   atomic.Value
	)
	fail := func(err error) {
		failures.Add(1)
		firstErr.CompareAndSwap(nil, err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ { // short sessions
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := []byte(fmt.Sprintf("short session from worker %d", w))
			for {
				select {
				case <-stop:
					return
				default:
				}
				got, err := echoOnce(tb.addr, p, 20*time.Second)
				if err == nil && !bytes.Equal(got, p) {
					err = fmt.Errorf("short echo %q", got)
				}
				if err != nil {
					fail(err)
					continue
				}
				shortOK.Add(1)
			}
		}()
	}
	for w := 0; w < 2; w++ { // long transfers
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				n, err := longTransfer(tb.addr, 4<<20)
				if err != nil {
					fail(err)
					continue
				}
				longOK.Add(1)
				longBytes.Add(n)
			}
		}()
	}

	var samples []soakSample
	start := time.Now()
	sample := func() {
		samples = append(samples, soakSample{at: time.Since(start), fds: countFDs(t), gorout: runtime.NumGoroutine(),
			rss: selfRSS(t), active: tb.eng.Metrics().Active()})
	}
	tick := time.NewTicker(min(5*time.Second, window/4))
	defer tick.Stop()
	nextReload := start.Add(reloadEvery)
	reloads := 0
	for time.Since(start) < d {
		<-tick.C
		sample()
		if time.Now().After(nextReload) {
			reloads++
			if err := tb.reload(confs[reloads%2]); err != nil {
				t.Fatalf("reload %d: %v", reloads, err)
			}
			nextReload = nextReload.Add(reloadEvery)
			for i, h := range held {
				if err := h.echo(1024); err != nil {
					t.Errorf("held session %d after reload %d: %v", i, reloads, err)
				}
			}
		}
	}
	close(stop)
	wg.Wait()
	for i, h := range held {
		if err := h.echo(64 << 10); err != nil {
			t.Errorf("held session %d at the end: %v", i, err)
		}
	}

	t.Logf("soak %v: %d short sessions, %d long transfers (%.0f MiB, SHA-256 checked), %d held sessions, %d reloads, %d failures",
		d, shortOK.Load(), longOK.Load(), float64(longBytes.Load())/(1<<20), holds, reloads, failures.Load())
	if n := failures.Load(); n != 0 {
		t.Errorf("%d sessions failed; first: %v", n, firstErr.Load())
	}
	if reloads == 0 {
		t.Error("no reload happened")
	}
	first, last := soakWindow(samples, 0, window), soakWindow(samples, d-window, d)
	if len(first) == 0 || len(last) == 0 {
		t.Fatalf("no samples in the first or last %v", window)
	}
	f0, f1 := medianOf(first, func(s soakSample) int64 { return int64(s.fds) }), medianOf(last, func(s soakSample) int64 { return int64(s.fds) })
	g0, g1 := medianOf(first, func(s soakSample) int64 { return int64(s.gorout) }), medianOf(last, func(s soakSample) int64 { return int64(s.gorout) })
	r0, r1 := medianOf(first, func(s soakSample) int64 { return s.rss }), medianOf(last, func(s soakSample) int64 { return s.rss })
	t.Logf("first %v -> last %v (medians): descriptors %d -> %d, goroutines %d -> %d, RSS %.1f -> %.1f MiB",
		window, window, f0, f1, g0, g1, mib(r0), mib(r1))
	// The traffic is the same throughout; in-flight sessions make the
	// samples vary by a few of each.
	if f1 > f0+16 {
		t.Errorf("descriptors grew from %d to %d", f0, f1)
	}
	if g1 > g0+16 {
		t.Errorf("goroutines grew from %d to %d", g0, g1)
	}
	if r1 > r0+r0/4+(16<<20) {
		t.Errorf("RSS grew from %.1f to %.1f MiB", mib(r0), mib(r1))
	}
}

// soakWindow returns the samples taken in [from, to).
func soakWindow(s []soakSample, from, to time.Duration) []soakSample {
	var out []soakSample
	for _, x := range s {
		if x.at >= from && x.at < to {
			out = append(out, x)
		}
	}
	return out
}

// medianOf returns the median of f over s.
func medianOf(s []soakSample, f func(soakSample) int64) int64 {
	v := make([]int64, len(s))
	for i, x := range s {
		v[i] = f(x)
	}
	slices.Sort(v)
	return v[len(v)/2]
}

// longTransfer sends n random bytes through the proxy at addr and checks
// by SHA-256 that the echo is the same; it returns the bytes moved.
func longTransfer(addr string, n int) (int64, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	want := sha256.New()
	errc := make(chan error, 1)
	go func() {
		buf := make([]byte, 64<<10)
		for left := n; left > 0; left -= len(buf) {
			b := buf[:min(len(buf), left)]
			rand.Read(b)
			want.Write(b)
			if _, err := c.Write(b); err != nil {
				errc <- fmt.Errorf("long transfer, writing: %w", err)
				return
			}
		}
		errc <- nil
	}()
	got := sha256.New()
	m, err := io.CopyN(got, c, int64(n))
	if err != nil {
		return m, fmt.Errorf("long transfer, reading after %d of %d bytes: %w", m, n, err)
	}
	if err := <-errc; err != nil {
		return m, err
	}
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		return m, errors.New("long transfer: SHA-256 of the echo differs")
	}
	return m, nil
}
