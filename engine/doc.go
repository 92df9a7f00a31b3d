// Package engine is the gnet reactor of tlsrelay: listeners, sessions (a
// client conn and its upstream conn on one event loop), per-loop timers,
// backpressure, access logging and metrics.
//
// Concurrency: everything about a session runs on the event loop that
// accepted its client. The only ways in from other goroutines are Enroll
// results, EventLoop.Execute tasks and atomics; each method says where it
// runs.
package engine
