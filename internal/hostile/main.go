// Command hostile reproduces issue 18's hostile-peer scenarios against a
// real proxy process (tlsrelay or NGINX), for docs/reliability.md:
//
//	hostile pki DIR                 writes a PKI (ca.pem, server.pem/key, client.pem/key)
//	hostile echo DIR                a TLS echo upstream requiring a client certificate; prints its address
//	hostile stream DIR              a TLS upstream that streams to each client until killed; prints its address
//	hostile flood ADDR SECONDS      a client that writes for SECONDS and never reads; prints bytes written each second
//
// It is a measuring tool, not a test: the tests are engine/hostile_test.go.
package main

import (
	"fmt"
	"math"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "hostile:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) < 2 {
		return fmt.Errorf("usage: hostile pki|echo|stream DIR | hostile flood ADDR SECONDS")
	}
	switch args[0] {
	case "pki":
		set, err := pki.NewSet(pki.ECDSAP256, 1)
		if err != nil {
			return fmt.Errorf("making the PKI: %w", err)
		}
		_, err = set.WriteFiles(args[1])
		return err
	case "echo", "stream":
		return serve(args[0], args[1])
	case "flood":
		secs := 60
		if len(args) > 2 {
			secs, _ = strconv.Atoi(args[2])
		}
		return flood(args[1], time.Duration(secs)*time.Second)
	}
	return fmt.Errorf("unknown mode %q", args[0])
}

// serve runs an echo upstream, or one that streams to each client until
// it is killed, with the PKI in dir; it prints its address.
func serve(mode, dir string) error {
	cfg, err := pki.FilesIn(dir).ServerConfig()
	if err != nil {
		return err
	}
	bc := backend.Config{TLS: cfg, Mode: backend.Echo}
	if mode == "stream" {
		bc.Mode, bc.SourceBytes = backend.Source, math.MaxInt64
	}
	srv, err := backend.Start(bc)
	if err != nil {
		return err
	}
	fmt.Println(srv.Addr())
	select {} // until killed
}

func flood(addr string, d time.Duration) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer c.Close()
	chunk := make([]byte, 64<<10)
	var n int64
	end := time.Now().Add(d)
	next := time.Now().Add(time.Second)
	for time.Now().Before(end) {
		c.SetWriteDeadline(next)
		m, err := c.Write(chunk)
		n += int64(m)
		if err != nil && !os.IsTimeout(err) {
			fmt.Printf("write failed after %d bytes: %v\n", n, err)
			return nil
		}
		if !time.Now().Before(next) {
			fmt.Printf("written %d\n", n)
			next = next.Add(time.Second)
		}
	}
	return nil
}
