// Package engine is the gnet reactor of tlsrelay: sessions (a client conn
// and its upstream conn on one event loop), their flow control, the loops
// and their ticker, the plan a configuration is built into and its reload,
// access logging and metrics.
//
// What never touches a session's internals lives in packages of its own,
// which the engine drives: engine/listen (the listening sockets and their
// accept loops), engine/proxyproto (the PROXY header read from clients and
// sent upstream), engine/wheel (each loop's timer wheel), engine/errlog
// (the error log), engine/logfile (the access-log files shared across
// plans) and engine/memory (the GC pacer and the release after a burst).
// The engine keeps how each of them meets a session: a listening socket's
// binding to a server block and the hand-off of an accepted client to a
// loop (handoff.go), the headers at a session's edges (proxyproto.go), the
// timers a session embeds, a plan's set of access logs (logset.go).
//
// Concurrency: everything about a session runs on the event loop that
// accepted its client. The only ways in from other goroutines are Enroll
// and Adopt results, EventLoop.Execute tasks and atomics; each method says
// where it runs.
package engine
