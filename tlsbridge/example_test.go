package tlsbridge_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/tlsrelay/tlsrelay/tlsbridge"
)

// Example shows a dialer's use of a policy: one config per target, a
// handshake, Observe, and the single retry without resumption when a
// handshake that offered a ticket failed.
func Example() {
	store := tlsbridge.NewSessionStore(tlsbridge.SessionStoreOptions{})
	policy, err := tlsbridge.NewPolicy(tlsbridge.PolicyConfig{SessionReuse: true}, store)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, w := range policy.Warnings() {
		fmt.Println("warning:", w)
	}
	// An upstream that closes every connection at once.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	target := tlsbridge.Target{Addr: ln.Addr().String(), Host: "backend1.example.com"}
	vars := tlsbridge.Vars{RemoteAddr: "192.0.2.1", ServerAddr: "127.0.0.1", ServerPort: "5432"}
	dial := func(cfg *tls.Config) (tls.ConnectionState, error) {
		raw, err := net.DialTimeout("tcp", target.Addr, time.Second)
		if err != nil {
			return tls.ConnectionState{}, err
		}
		c := tls.Client(raw, cfg)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		err = c.HandshakeContext(ctx)
		if err != nil {
			raw.Close()
		}
		return c.ConnectionState(), err
	}
	cfg, _ := policy.ClientConfig(target, vars)
	cs, err := dial(cfg)
	if policy.Observe(target, vars, cs, err) {
		cfg, _ = policy.ConfigWithoutResumption(target, vars)
		cs, err = dial(cfg)
		policy.Observe(target, vars, cs, err)
	}
	fmt.Println(tlsbridge.FactsOf(cs, 0, err).Reason)
	// Output:
	// warning: proxy_ssl_verify is off: the upstream certificate is not checked
	// closed
}
