// Package logfile holds the access-log files: one File per path and
// parameters (buffer=, gzip=, flush=), shared by every server block and
// loop that logs to it and, through Files, across the plans of reloads; a
// file is closed with its last user, and reopened by its path after
// logrotate renamed it (SIGUSR1). A line is written whole; a buffered
// file's lines reach the file when the buffer fills, when its flush= time
// passes (FlushDue, from the engine's ticker) or when it is closed or
// reopened, none lost and none written twice.
//
// Concurrency: Files and File are safe for concurrent use; every method
// may run on any goroutine (the loops write, the ticker flushes, a reload
// acquires and releases, a signal reopens). The package keeps no state of
// its own.
package logfile
