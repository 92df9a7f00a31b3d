package testutil

import (
	"bufio"
	"net"
	"runtime"
	"testing"
	"time"
)

// TestServe: every connection is handled; when the test ends, the
// connections still open are closed and the handlers have returned.
func TestServe(t *testing.T) {
	g0 := runtime.NumGoroutine()
	done := make(chan struct{})
	t.Run("serving", func(t *testing.T) {
		ln := Listen(t, "tcp", "127.0.0.1:0")
		Serve(t, ln, func(c net.Conn) {
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Write([]byte(line))
			Discard(c) // held until the cleanup closes it
		})
		for i := 0; i < 3; i++ {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write([]byte("hello\n"))
			got, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || got != "hello\n" {
				t.Fatalf("echo %q, %v", got, err)
			}
		}
		close(done)
	})
	<-done
	// The subtest's cleanup closed the three held connections and waited
	// for their handlers: no goroutine of Serve is left.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > g0 && time.Now().Before(deadline) {
		runtime.Gosched()
	}
	if n := runtime.NumGoroutine(); n > g0 {
		t.Errorf("%d goroutines after the test, %d before", n, g0)
	}
}
