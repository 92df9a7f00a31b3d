// Package errlog is the error log: NGINX's line format and eight levels,
// one write per line, a file reopened by its path after logrotate renamed
// it (SIGUSR1) or pointed elsewhere by a reload that changed error_log.
//
// Concurrency: a Log is safe for concurrent use; every method may run on
// any goroutine (the engine's loops, dialer and accept goroutines, the
// command's signal handling). The package keeps no state of its own.
package errlog
