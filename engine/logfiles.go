package engine

// Access-log files: one writer per file (buffered, gzipped, flushed on
// time), shared by the servers and loops that log to it and across the
// plans of reloads, reopened by SIGUSR1. Every method is safe for
// concurrent use.

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/tlsrelay/tlsrelay/engine/conf"
)

// logWriter is one open access-log file, shared by every server and loop
// that logs to it. Methods are safe for concurrent use.
type logWriter struct {
	mu      sync.Mutex
	key     string // in logFiles
	path    string
	f       *os.File
	size    int    // buffer= in bytes; 0: a write per line
	pending []byte // buffered lines
	level   int    // gzip level; 0: plain
	gz      *gzip.Writer
	flush   time.Duration // flush=; 0: only when the buffer fills
	oldest  time.Time     // when pending got its first line
}

// openLogWriter opens path for appending. buffer > 0 buffers lines up to
// that size; level > 0 gzips each flushed buffer into a gzip member of its
// own, as NGINX does (zcat reads the file whole).
func openLogWriter(path string, buffer int64, level int, flush time.Duration) (*logWriter, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening access log: %w", err)
	}
	w := &logWriter{path: path, f: f, size: int(buffer), level: level, flush: flush}
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

// write logs one line (with its newline).
func (w *logWriter) write(line []byte, now time.Time) error {
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
func (w *logWriter) flushDue(now time.Time) (time.Time, error) {
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

func (w *logWriter) flushLocked() error {
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
func (w *logWriter) close() error {
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
func (w *logWriter) reopen() error {
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

// logFiles are the engine's open access-log files, shared by every plan
// that logs to them: a reload keeps open a file the new configuration
// names again, so old and new sessions append to one writer. Safe for
// concurrent use.
type logFiles struct {
	mu   sync.Mutex
	open map[string]*logWriter
	refs map[*logWriter]int
}

func newLogFiles() *logFiles {
	return &logFiles{open: map[string]*logWriter{}, refs: map[*logWriter]int{}}
}

// acquire returns the writer for path with these parameters, opening it
// on first use.
func (lf *logFiles) acquire(path string, buffer int64, level int, flush time.Duration) (*logWriter, error) {
	key := fmt.Sprintf("%s\x00%d\x00%d\x00%d", path, buffer, level, flush)
	lf.mu.Lock()
	defer lf.mu.Unlock()
	if w := lf.open[key]; w != nil {
		lf.refs[w]++
		return w, nil
	}
	w, err := openLogWriter(path, buffer, level, flush)
	if err != nil {
		return nil, err
	}
	w.key = key
	lf.open[key] = w
	lf.refs[w] = 1
	return w, nil
}

// release drops one plan's use of w and closes it after the last.
func (lf *logFiles) release(w *logWriter) {
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
func (lf *logFiles) writers() []*logWriter {
	lf.mu.Lock()
	defer lf.mu.Unlock()
	out := make([]*logWriter, 0, len(lf.open))
	for _, w := range lf.open {
		out = append(out, w)
	}
	return out
}

// reopen reopens every file (SIGUSR1), returning the first error.
func (lf *logFiles) reopen() error {
	var first error
	for _, w := range lf.writers() {
		if err := w.reopen(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// flushDue flushes buffers past their flush= time and returns the earliest
// time a buffer will next be due (zero: none). Any goroutine.
func (lf *logFiles) flushDue(now time.Time) (next time.Time) {
	for _, w := range lf.writers() {
		if at, _ := w.flushDue(now); !at.IsZero() && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	return next
}

// logSet is one plan's access logs: the writers it holds in the engine's
// logFiles, and the formats its directives compiled.
type logSet struct {
	files   *logFiles
	held    map[*logWriter]bool
	formats map[string]*logFormat
}

func newLogSet(files *logFiles) *logSet {
	return &logSet{files: files, held: map[*logWriter]bool{}, formats: map[string]*logFormat{}}
}

// open returns the server's access logs for the configuration's
// access_log directives.
func (ls *logSet) open(cfg *conf.Config, logs []conf.AccessLog) ([]accessLog, error) {
	var out []accessLog
	for _, l := range logs {
		if l.Off {
			return nil, nil
		}
		if strings.Contains(l.Path, "$") {
			return nil, conf.Errorf(l.Pos, "access_log path with variables is not supported")
		}
		lf := ls.formats[l.Format]
		if lf == nil {
			def := cfg.Stream.LogFormats[l.Format]
			if def == nil {
				return nil, conf.Errorf(l.Pos, "unknown log format %q", l.Format)
			}
			lf = compileFormat(def.Template, def.Escape)
			ls.formats[l.Format] = lf
		}
		w, err := ls.files.acquire(l.Path, l.Buffer, l.Gzip, l.Flush)
		if err != nil {
			return nil, conf.Errorf(l.Pos, "%v", err)
		}
		if ls.held[w] {
			ls.files.release(w) // one reference per plan
		}
		ls.held[w] = true
		al := accessLog{w: w, format: lf}
		if l.IfTemplate != nil {
			al.cond = compileFormat(l.IfTemplate, "none")
		}
		out = append(out, al)
	}
	return out, nil
}

// close releases the plan's writers (a file closes with its last plan).
func (ls *logSet) close() {
	if ls == nil || ls.files == nil {
		return
	}
	for w := range ls.held {
		ls.files.release(w)
	}
	ls.held = map[*logWriter]bool{}
}

// closeAll flushes and closes every file still open (the engine stops).
func (lf *logFiles) closeAll() {
	lf.mu.Lock()
	ws := make([]*logWriter, 0, len(lf.open))
	for _, w := range lf.open {
		ws = append(ws, w)
	}
	lf.open, lf.refs = map[string]*logWriter{}, map[*logWriter]int{}
	lf.mu.Unlock()
	for _, w := range ws {
		w.close()
	}
}
