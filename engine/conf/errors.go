package conf

import (
	"fmt"
	"strconv"
)

// Pos is where a directive sits: the file and the 1-based line of the token
// that ends it (its ";" or "{"), as NGINX reports positions. The zero Pos
// means "not set" (a default value, or a directive from -g).
type Pos struct {
	File string
	Line int
}

// String returns "file:line"; "" for the zero Pos, and the file alone
// when there is no line ("command line" for -g directives).
func (p Pos) String() string {
	if p.Line == 0 {
		return p.File
	}
	return p.File + ":" + strconv.Itoa(p.Line)
}

// IsZero reports whether p is the zero Pos (no position known).
func (p Pos) IsZero() bool { return p == Pos{} }

// Severity levels used in messages, NGINX's names.
const (
	LevelEmerg = "emerg"
	LevelWarn  = "warn"
)

// Error is a configuration error at a position, formatted like NGINX's:
//
//	[emerg] unknown directive "x" in /etc/tlsrelay/tlsrelay.conf:14
//
// The command prefixes it with "tlsrelay: ". Err, when set, is the
// underlying cause (for example an *fs.PathError) and is what Unwrap returns.
type Error struct {
	Pos   Pos
	Level string // "emerg" unless set otherwise
	Msg   string
	Err   error
}

// Error returns the message in NGINX's format.
func (e *Error) Error() string {
	lvl := e.Level
	if lvl == "" {
		lvl = LevelEmerg
	}
	s := "[" + lvl + "] " + e.Msg
	if p := e.Pos.String(); p != "" {
		s += " in " + p
	}
	return s
}

// Unwrap returns the underlying cause, if any.
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error at pos with level emerg. As with fmt.Errorf, a %w
// verb in format records its operand as the cause.
func Errorf(pos Pos, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	e := &Error{Pos: pos, Level: LevelEmerg, Msg: err.Error()}
	if u, ok := err.(interface{ Unwrap() error }); ok {
		e.Err = u.Unwrap()
	}
	return e
}

// Warning is a legal but questionable setting, or a skipped directive,
// printed by the command as "[warn] ..." without failing.
type Warning struct {
	Pos Pos
	Msg string
}

// String formats w like NGINX: `[warn] msg in file:line`.
func (w Warning) String() string {
	s := "[warn] " + w.Msg
	if p := w.Pos.String(); p != "" {
		s += " in " + p
	}
	return s
}
