package pool_test

import (
	"fmt"
	"time"

	"github.com/tlsrelay/tlsrelay/pool"
)

// A session's walk: the first peer fails, proxy_next_upstream tries the
// next one, which connects; the session ends with Release.
func ExampleSelection() {
	g, err := pool.NewGroup(pool.GroupConfig{
		Name: "backend",
		Servers: []pool.ServerConfig{
			{Addr: "10.0.0.1:443", Weight: 5, MaxFails: 1, FailTimeout: 10 * time.Second},
			pool.NewServerConfig("10.0.0.2:443"),
		},
	}, nil)
	if err != nil {
		panic(err)
	}
	now := time.Now()
	s := g.NewSelection("", 0, now)
	p, _ := s.Next(now)
	fmt.Println("try", p.Name, "tries left", s.TriesLeft())
	disabled := s.Failed(p, now) // connect or handshake failed
	fmt.Println("disabled", disabled, "tries left", s.TriesLeft())
	p, _ = s.Next(now)
	fmt.Println("try", p.Name)
	s.Connected(p, now)
	// ... the session runs ...
	s.Release(p)
	_, err = g.NewSelection("", 0, now).Next(now)
	fmt.Println(err == nil)
	// Output:
	// try 10.0.0.1:443 tries left 2
	// disabled true tries left 1
	// try 10.0.0.2:443
	// true
}
