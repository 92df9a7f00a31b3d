package main

import (
	"io"
	"net"
	"testing"
	"time"
)

// TestDemoProxies runs the demo on a known free port, talks through it and
// checks that it stops by itself at its time limit.
func TestDemoProxies(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	done := make(chan error, 1)
	go func() { done <- demo(port, 3*time.Second) }()
	addr := ln.Addr().String()
	var c net.Conn
	deadline := time.Now().Add(3 * time.Second)
	for {
		c, err = net.Dial("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("demo never listened: %v", err)
	}
	c.SetDeadline(time.Now().Add(3 * time.Second))
	c.Write([]byte("ping\n"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping\n" {
		t.Fatalf("echo %q, %v", buf, err)
	}
	c.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("demo did not stop at its limit")
	}
}
