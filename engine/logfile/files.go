package logfile

// Access-log files: one writer per file (buffered, gzipped, flushed on
// time), shared by the servers and loops that log to it and across the
// plans of reloads, reopened by SIGUSR1. Every method is safe for
// concurrent use.

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"
)

// File is one open access-log file, shared by every server and loop
// that logs to it. Methods are safe for concurrent use.
type File struct {
	mu      sync.Mutex
	key     string // in Files
	path    string
	f       *os.File
	size    int    // buffer= in bytes; 0: a write per line
	pending []byte // buffered lines
	level   int    // gzip level; 0: plain
	gz      *gzip.Writer
	flush   time.Duration // flush=; 0: only when the buffer fills
	oldest  time.Time     // when pending got its first line
}

// openFile opens path for appending. buffer > 0 buffers lines up to
// that size; level > 0 gzips each flushed buffer into a gzip member of its
// own, as NGINX does (zcat reads the file whole).
func openFile(path string, buffer int64, level int, flush time.Duration) (*File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening access log: %w", err)
	}
	w := &File{path: path, f: f, size: int(buffer), level: level, flush: flush}
	if w.size > 0 {
		w.pending = make([]byte, 0, w.size)
	}
	if level > 0 {
		if w.gz, err = gzip.NewWriterLevel(io.Discard, level); err != nil {
			f.Close()
			return nil, fmt.Errorf("setting up gzip for the access log: %w", err)
		}
	}
	return w, nil
}

// Path is the file's path, as the access_log directive named it.
func (w *File) Path() string { return w.path }

// Write logs one line (with its newline) at now.
func (w *File) Write(line []byte, now time.Time) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.size == 0 {
		_, err := w.f.Write(line)
		return err
	}
	var err error
	if len(w.pending)+len(line) > w.size && len(w.pending) > 0 {
		err = w.flushLocked()
	}
	if len(w.pending) == 0 {
		w.oldest = now
	}
	w.pending = append(w.pending, line...)
	if len(w.pending) >= w.size {
		err = w.flushLocked()
	}
	return err
}

// flushDue writes the buffer if its oldest line is older than flush=. It
// returns when the buffer will next be due (zero: not before a new line).
func (w *File) flushDue(now time.Time) (time.Time, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.flush <= 0 || len(w.pending) == 0 {
		return time.Time{}, nil
	}
	if now.Sub(w.oldest) >= w.flush {
		return time.Time{}, w.flushLocked()
	}
	return w.oldest.Add(w.flush), nil
}

func (w *File) flushLocked() error {
	if len(w.pending) == 0 {
		return nil
	}
	var err error
	if w.gz != nil {
		w.gz.Reset(w.f)
		if _, err = w.gz.Write(w.pending); err == nil {
			err = w.gz.Close()
		}
	} else {
		_, err = w.f.Write(w.pending)
	}
	w.pending = w.pending[:0]
	return err
}

// close flushes and closes the file.
func (w *File) close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	err := w.flushLocked()
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// reopen flushes what is buffered to the old file, opens path anew and
// closes the old file: after logrotate renamed it, lines go to a fresh
// file, none lost and none written twice.
func (w *File) reopen() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	ferr := w.flushLocked()
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("reopening access log: %w", err)
	}
	old := w.f
	w.f = f
	if err := old.Close(); ferr == nil {
		ferr = err
	}
	return ferr
}

// Files are the engine's open access-log files, shared by every plan
// that logs to them: a reload keeps open a file the new configuration
// names again, so old and new sessions append to one writer. Safe for
// concurrent use.
type Files struct {
	mu   sync.Mutex
	open map[string]*File
	refs map[*File]int
}

// NewFiles returns an empty set of files.
func NewFiles() *Files {
	return &Files{open: map[string]*File{}, refs: map[*File]int{}}
}

// Acquire returns the file for path with these parameters (buffer= in
// bytes, 0: a write per line; gzip level, 0: plain; flush=, 0: only when
// the buffer fills), opening it on first use; Release drops the use.
func (lf *Files) Acquire(path string, buffer int64, level int, flush time.Duration) (*File, error) {
	key := fmt.Sprintf("%s\x00%d\x00%d\x00%d", path, buffer, level, flush)
	lf.mu.Lock()
	defer lf.mu.Unlock()
	if w := lf.open[key]; w != nil {
		lf.refs[w]++
		return w, nil
	}
	w, err := openFile(path, buffer, level, flush)
	if err != nil {
		return nil, err
	}
	w.key = key
	lf.open[key] = w
	lf.refs[w] = 1
	return w, nil
}

// Release drops one use of w and closes it after the last.
func (lf *Files) Release(w *File) {
	lf.mu.Lock()
	lf.refs[w]--
	last := lf.refs[w] <= 0
	if last {
		delete(lf.refs, w)
		delete(lf.open, w.key)
	}
	lf.mu.Unlock()
	if last {
		w.close()
	}
}

// writers returns the open writers.
func (lf *Files) writers() []*File {
	lf.mu.Lock()
	defer lf.mu.Unlock()
	out := make([]*File, 0, len(lf.open))
	for _, w := range lf.open {
		out = append(out, w)
	}
	return out
}

// Reopen reopens every file (SIGUSR1), returning the first error.
func (lf *Files) Reopen() error {
	var first error
	for _, w := range lf.writers() {
		if err := w.reopen(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// FlushDue flushes buffers past their flush= time and returns the
// earliest time a buffer will next be due (zero: none). Any goroutine.
func (lf *Files) FlushDue(now time.Time) (next time.Time) {
	for _, w := range lf.writers() {
		if at, _ := w.flushDue(now); !at.IsZero() && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	return next
}

// CloseAll flushes and closes every file still open (the engine stops).
func (lf *Files) CloseAll() {
	lf.mu.Lock()
	ws := make([]*File, 0, len(lf.open))
	for _, w := range lf.open {
		ws = append(ws, w)
	}
	lf.open, lf.refs = map[string]*File{}, map[*File]int{}
	lf.mu.Unlock()
	for _, w := range ws {
		w.close()
	}
}
