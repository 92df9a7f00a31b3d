package faultnet

import (
	"fmt"
	"net"
	"time"
)

// Silent opens n connections to addr that never send a byte and returns
// them; the caller closes them (CloseAll). On error the connections opened
// so far are closed.
func Silent(addr string, n int, timeout time.Duration) ([]net.Conn, error) {
	conns := make([]net.Conn, 0, n)
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err != nil {
			CloseAll(conns)
			return nil, fmt.Errorf("opening silent client %d of %d: %w", i+1, n, err)
		}
		conns = append(conns, c)
	}
	return conns, nil
}

// CloseAll closes every connection.
func CloseAll(conns []net.Conn) {
	for _, c := range conns {
		c.Close()
	}
}

// ResetAfterConnect connects to addr, writes p (if any) and resets the
// connection at once (RST): the proxy sees its client vanish while it is
// still dialing the upstream.
func ResetAfterConnect(addr string, p []byte, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return fmt.Errorf("connecting a resetting client: %w", err)
	}
	tc := c.(*net.TCPConn)
	if len(p) > 0 {
		if _, err := tc.Write(p); err != nil {
			tc.Close()
			return fmt.Errorf("writing before the reset: %w", err)
		}
	}
	Reset(tc)
	return nil
}

// Trickle writes p on c one byte every interval, the first at once. It
// returns how many bytes it wrote, early when stop is closed or a write
// fails.
func Trickle(c net.Conn, p []byte, interval time.Duration, stop <-chan struct{}) (int, error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for i := range p {
		if i > 0 {
			select {
			case <-stop:
				return i, nil
			case <-t.C:
			}
		}
		if _, err := c.Write(p[i : i+1]); err != nil {
			return i, fmt.Errorf("trickling byte %d: %w", i, err)
		}
	}
	return len(p), nil
}
