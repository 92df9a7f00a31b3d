package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ConnLoad is one round of new connections: each worker repeatedly
// connects to Addr in plaintext, writes Payload bytes, reads the echo and
// closes, until MaxConns connections have been attempted or Duration has
// passed.
type ConnLoad struct {
	Addr     string
	Workers  int
	MaxConns int
	Duration time.Duration
	// Payload is the size of the echoed message; zero means 16.
	Payload int
	// Timeout bounds each connection; zero means 5s.
	Timeout time.Duration
}

// ConnResult is what a ConnLoad round did.
type ConnResult struct {
	Conns   int // completed: connect, write, echo read
	Errors  int
	Elapsed time.Duration
	// Latencies of the completed connections, connect to echo read.
	Latencies []time.Duration
	FirstErr  error
}

// RunConnLoad runs l and returns its result.
func RunConnLoad(ctx context.Context, l ConnLoad) ConnResult {
	payload := l.Payload
	if payload <= 0 {
		payload = 16
	}
	timeout := l.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	var (
		started atomic.Int64
		mu      sync.Mutex
		res     ConnResult
		wg      sync.WaitGroup
	)
	res.Latencies = make([]time.Duration, 0, min(l.MaxConns, 1<<16))
	ctx, cancel := context.WithTimeout(ctx, l.Duration)
	defer cancel()
	t0 := time.Now()
	for w := 0; w < l.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := make([]byte, payload)
			buf := make([]byte, payload)
			for ctx.Err() == nil && started.Add(1) <= int64(l.MaxConns) {
				t := time.Now()
				err := echoOnce(l.Addr, msg, buf, timeout)
				d := time.Since(t)
				mu.Lock()
				if err != nil {
					res.Errors++
					if res.FirstErr == nil {
						res.FirstErr = err
					}
				} else {
					res.Conns++
					res.Latencies = append(res.Latencies, d)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(t0)
	return res
}

// echoOnce connects, writes msg, reads len(msg) bytes back and closes.
func echoOnce(addr string, msg, buf []byte, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("writing to %s: %w", addr, err)
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		return fmt.Errorf("reading the echo from %s: %w", addr, err)
	}
	return nil
}

// CheckEcho makes one echo exchange through addr, to check that a proxy
// relays before it is measured.
func CheckEcho(addr string, timeout time.Duration) error {
	msg := []byte("tlsrelay-bench checking the path")
	return echoOnce(addr, msg, make([]byte, len(msg)), timeout)
}

// StreamResult is what a throughput round did.
type StreamResult struct {
	Bytes   int64
	Elapsed time.Duration
}

// RunStreams opens conns connections to addr at once (the upstreams are
// source servers that each send want bytes and close) and reads every
// connection to EOF. It fails when a connection delivers other than want
// bytes or the whole round exceeds timeout.
func RunStreams(ctx context.Context, addr string, conns int, want int64, timeout time.Duration) (StreamResult, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var (
		wg    sync.WaitGroup
		total atomic.Int64
		mu    sync.Mutex
		first error
	)
	t0 := time.Now()
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := readStream(ctx, addr, want)
			total.Add(n)
			if err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res := StreamResult{Bytes: total.Load(), Elapsed: time.Since(t0)}
	return res, first
}

func readStream(ctx context.Context, addr string, want int64) (int64, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, fmt.Errorf("connecting to %s: %w", addr, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	buf := make([]byte, 256<<10)
	var n int64
	for {
		m, err := c.Read(buf)
		n += int64(m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return n, fmt.Errorf("reading stream from %s after %d bytes: %w", addr, n, err)
		}
	}
	if n != want {
		return n, fmt.Errorf("stream from %s ended after %d of %d bytes", addr, n, want)
	}
	return n, nil
}

// Holder keeps idle proxied connections open.
type Holder struct {
	mu    sync.Mutex
	conns []net.Conn
}

// Len returns the number of connections held.
func (h *Holder) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.conns)
}

// Open adds n connections to addr, workers at a time: each connects, sends
// one byte and reads the echo (so the upstream session is established),
// then stays open and idle. Source addresses rotate over 127.0.0.2 and up,
// 4,000 connections each, so ephemeral ports never run short. It stops at
// the first error or when ctx is done.
func (h *Holder) Open(ctx context.Context, addr string, n, workers int) error {
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	base := int64(h.Len())
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				c, err := holdOne(ctx, addr, base+i)
				if err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					cancel()
					return
				}
				h.mu.Lock()
				h.conns = append(h.conns, c)
				h.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil && h.Len()-int(base) < n {
		first = ctx.Err()
	}
	return first
}

func holdOne(ctx context.Context, addr string, i int64) (net.Conn, error) {
	src := &net.TCPAddr{IP: net.IPv4(127, 0, byte(i/4000/250), byte(2+i/4000%250))}
	d := net.Dialer{
		LocalAddr: src,
		Timeout:   10 * time.Second,
		Control:   bindAddressNoPort,
	}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s from %s: %w", addr, src.IP, err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	b := []byte{'x'}
	if _, err := c.Write(b); err != nil {
		c.Close()
		return nil, fmt.Errorf("writing to %s: %w", addr, err)
	}
	if _, err := io.ReadFull(c, b); err != nil {
		c.Close()
		return nil, fmt.Errorf("reading the echo from %s: %w", addr, err)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// Close closes every held connection.
func (h *Holder) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.conns {
		c.Close()
	}
	h.conns = nil
}
