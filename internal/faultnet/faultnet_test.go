package faultnet

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/pki"
)

// TestFaults drives each fault with a plain crypto/tls client and checks
// that it fails the way the fault says, at the step it says.
func TestFaults(t *testing.T) {
	set, err := pki.NewSet(pki.ECDSAP256, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cfg Config
		// handshakeErr: the handshake must fail with an error containing
		// it; "" : it must succeed, and the echo too.
		handshakeErr string
		// readErr: after the echo, the next read must fail so ("EOF":
		// io.EOF).
		readErr string
	}{
		{Config{Fault: RandomReply}, "first record does not look like a TLS handshake", ""},
		{Config{Fault: ResetInHandshake}, "connection reset by peer", ""},
		{Config{Fault: StallAfterServerHello, Deadline: 2 * time.Second}, "i/o timeout", ""},
		{Config{Fault: ResetMidStream, Echo: 5}, "", "connection reset by peer"},
		{Config{Fault: CloseNotifyThenData, Echo: 5, Raw: []byte("after close_notify")}, "", "EOF"},
		{Config{Fault: RawAfterHandshake, Echo: 5, Raw: RecordHeader(23, 20000)}, "", "oversized record"},
		{Config{Fault: RawAfterHandshake, Echo: 5, Raw: Record(23, bytes.Repeat([]byte{7}, 64))}, "", "bad record MAC"},
		{Config{Fault: Echo, Delay: 100 * time.Millisecond}, "", ""},
	} {
		t.Run(tc.cfg.Fault.String(), func(t *testing.T) {
			if tc.cfg.Fault != RandomReply {
				tc.cfg.TLS = set.ServerConfig()
			}
			u, err := Start(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer u.Close()
			raw, err := net.Dial("tcp", u.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			// A stalled handshake ends at the client's deadline; the others
			// fail or succeed well within it.
			raw.SetDeadline(time.Now().Add(300 * time.Millisecond))
			if tc.handshakeErr == "" {
				raw.SetDeadline(time.Now().Add(5 * time.Second))
			}
			c := tls.Client(raw, &tls.Config{RootCAs: pki.Pool(set.Root), ServerName: "localhost",
				Certificates: []tls.Certificate{set.Client.TLSCertificate()}})
			err = c.Handshake()
			if tc.handshakeErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.handshakeErr) {
					t.Fatalf("handshake: %v, want %q", err, tc.handshakeErr)
				}
				if u.Struck() != 1 {
					t.Fatalf("Struck = %d, want 1", u.Struck())
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			raw.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 5)
			if _, err := io.ReadFull(c, got); err != nil || string(got) != "hello" {
				t.Fatalf("echo %q, %v", got, err)
			}
			if tc.readErr == "" {
				return
			}
			_, err = c.Read(make([]byte, 64))
			switch {
			case tc.readErr == "EOF":
				if err != io.EOF {
					t.Fatalf("read after the fault: %v, want io.EOF", err)
				}
			case err == nil || !strings.Contains(err.Error(), tc.readErr):
				t.Fatalf("read after the fault: %v, want %q", err, tc.readErr)
			}
		})
	}
}

// TestClients: a resetting client's peer sees ECONNRESET; a trickling
// client delivers its bytes one at a time; silent clients stay open.
func TestClients(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := ResetAfterConnect(ln.Addr().String(), []byte("x"), time.Second); err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	s.SetDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 8)
	var rerr error
	for rerr == nil {
		_, rerr = s.Read(b)
	}
	if !errors.Is(rerr, syscall.ECONNRESET) {
		t.Errorf("server read %v, want ECONNRESET", rerr)
	}
	s.Close()

	conns, err := Silent(ln.Addr().String(), 3, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer CloseAll(conns)
	var peers []net.Conn
	for range conns {
		p, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		peers = append(peers, p)
	}
	peers[0].SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := peers[0].Read(b); n != 0 || !errors.Is(err, syscall.EAGAIN) && !isTimeout(err) {
		t.Errorf("silent client sent %d bytes (%v)", n, err)
	}

	start := time.Now()
	n, err := Trickle(conns[1], []byte("abc"), 50*time.Millisecond, nil)
	if n != 3 || err != nil {
		t.Fatalf("Trickle = %d, %v", n, err)
	}
	if el := time.Since(start); el < 90*time.Millisecond {
		t.Errorf("3 bytes at 50 ms took %v", el)
	}
	peers[1].SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(peers[1], b[:3]); err != nil || string(b[:3]) != "abc" {
		t.Errorf("trickled %q, %v", b[:3], err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestRandomReplyNeverTLS answers many handshakes with random bytes: every
// one fails as a peer that does not speak TLS. A random first byte of 0x80
// (an SSLv2 header) or a record type once made the client report another
// error, one run in a hundred or so.
func TestRandomReplyNeverTLS(t *testing.T) {
	u, err := Start(Config{Fault: RandomReply})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	const n = 500
	for i := 0; i < n; i++ {
		raw, err := net.Dial("tcp", u.Addr())
		if err != nil {
			t.Fatal(err)
		}
		raw.SetDeadline(time.Now().Add(5 * time.Second))
		err = tls.Client(raw, &tls.Config{InsecureSkipVerify: true}).Handshake()
		raw.Close()
		if err == nil || !strings.Contains(err.Error(), "first record does not look like a TLS handshake") {
			t.Fatalf("handshake %d: %v, want a peer that does not speak TLS", i, err)
		}
	}
	if got := u.Struck(); got != n {
		t.Errorf("Struck = %d, want %d", got, n)
	}
}
