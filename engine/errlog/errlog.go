package errlog

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Level is an error-log severity, NGINX's eight levels.
type Level int

// Levels, least severe first.
const (
	LevelDebug Level = iota
	LevelInfo
	LevelNotice
	LevelWarn
	LevelError
	LevelCrit
	LevelAlert
	LevelEmerg
)

var levelNames = [...]string{"debug", "info", "notice", "warn", "error", "crit", "alert", "emerg"}

// String returns NGINX's name of the level.
func (l Level) String() string {
	if l < 0 || int(l) >= len(levelNames) {
		return "Level(" + strconv.Itoa(int(l)) + ")"
	}
	return levelNames[l]
}

// ParseLevel maps an error_log level name to a Level; "" is "error", NGINX's
// default.
func ParseLevel(s string) (Level, bool) {
	if s == "" {
		return LevelError, true
	}
	for i, n := range levelNames {
		if n == s {
			return Level(i), true
		}
	}
	return 0, false
}

// Log writes NGINX-style error-log lines:
//
//	2026/11/28 11:30:00 [error] 4242#0: *17 connect() failed ... while connecting to upstream, client: 127.0.0.1, ...
//
// It is safe for concurrent use; each line is one write.
type Log struct {
	mu    sync.Mutex
	w     io.Writer
	min   atomic.Int32 // Level
	pid   string
	buf   []byte
	close func() error
	// path is the file the log opened ("" for a writer it was given).
	path string
}

// New returns a log writing lines of level min and above to w.
func New(w io.Writer, min Level) *Log {
	l := &Log{w: w, pid: strconv.Itoa(os.Getpid())}
	l.SetLevel(min)
	return l
}

// Open opens path for appending ("stderr" is standard error).
func Open(path string, min Level) (*Log, error) {
	if path == "" || path == "stderr" {
		return New(os.Stderr, min), nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening error log: %w", err)
	}
	l := New(f, min)
	l.close = f.Close
	l.path = path
	return l, nil
}

// Reopen opens the log's file anew, by its path, and closes the old one:
// after logrotate renamed it, lines go to a fresh file. A log that opened
// no file (stderr, a writer) is left alone. Safe for concurrent use; no
// line is lost or written twice across the switch.
func (l *Log) Reopen() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	path := l.path
	l.mu.Unlock()
	if path == "" {
		return nil
	}
	return l.Reconfigure(path, l.level())
}

// Reconfigure points the log at path (opened for appending; "stderr" is
// standard error) and level min, as a reload that changed error_log asks.
// On error the log stays as it was. Safe for concurrent use.
func (l *Log) Reconfigure(path string, min Level) error {
	var w io.Writer = os.Stderr
	var closeFn func() error
	if path != "" && path != "stderr" {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return fmt.Errorf("opening error log: %w", err)
		}
		w, closeFn = f, f.Close
	} else {
		path = ""
	}
	l.mu.Lock()
	old := l.close
	l.w, l.close, l.path = w, closeFn, path
	l.mu.Unlock()
	l.SetLevel(min)
	if old != nil {
		return old()
	}
	return nil
}

// Path is the file the log opened: "" when it writes to standard error or
// to a writer it was given. Safe for concurrent use.
func (l *Log) Path() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.path
}

// Enabled reports whether lines of level l are written.
func (l *Log) Enabled(lv Level) bool { return l != nil && lv >= l.level() }

func (l *Log) level() Level { return Level(l.min.Load()) }

// SetLevel makes the log write lines of level min and above. Safe for
// concurrent use.
func (l *Log) SetLevel(min Level) { l.min.Store(int32(min)) }

// Logf writes one line at level lv; conn is the connection number shown as
// "*N" (0: none).
func (l *Log) Logf(lv Level, conn uint64, format string, args ...any) {
	if !l.Enabled(lv) {
		return
	}
	now := time.Now()
	l.mu.Lock()
	b := now.AppendFormat(l.buf[:0], "2006/01/02 15:04:05")
	b = append(b, " ["...)
	b = append(b, lv.String()...)
	b = append(b, "] "...)
	b = append(b, l.pid...)
	b = append(b, "#0: "...)
	if conn != 0 {
		b = append(b, '*')
		b = strconv.AppendUint(b, conn, 10)
		b = append(b, ' ')
	}
	b = fmt.Appendf(b, format, args...)
	b = append(b, '\n')
	l.w.Write(b)
	l.buf = b
	l.mu.Unlock()
}

// Close closes the underlying file, if the log opened one.
func (l *Log) Close() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.close == nil {
		return nil
	}
	err := l.close()
	l.close = nil
	return err
}
