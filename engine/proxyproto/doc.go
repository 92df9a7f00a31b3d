// Package proxyproto is the PROXY protocol (v1 and v2) at the engine's two
// edges: Read takes a client's header off an accepted connection (listen
// ... proxy_protocol), before its session starts; V1Header and V2Header
// build the header a session sends its upstream in clear (proxy_protocol
// on). Parsing is github.com/pires/go-proxyproto's; reading exactly the
// header's bytes, and writing, are this package's.
//
// Nothing here keeps state: every function may run on any goroutine (the
// engine reads on a client's header goroutine and writes on a dialer
// goroutine or a health checker's).
package proxyproto
