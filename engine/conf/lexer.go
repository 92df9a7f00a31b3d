package conf

import "fmt"

// maxToken is NGINX's NGX_CONF_BUFFER: a token this long or longer does not
// fit the reader's buffer and is refused.
const maxToken = 4096

// commandLine is the Pos.File of directives given with -g; NGINX reports
// their errors "in command line".
const commandLine = "command line"

// directive is one parsed directive: a name, its arguments and, for block
// directives, the directives inside the block. Includes are not expanded
// here; the interpreter expands them in the context it is walking.
type directive struct {
	name    string
	args    []string
	pos     Pos // line of the ";" or "{" that ends the directive
	isBlock bool
	block   []*directive
	end     Pos // line of the closing "}" of a block
}

// What read found at the end of a directive.
const (
	tokEnd        = iota // ";"
	tokBlockStart        // "{"
	tokBlockDone         // "}"
	tokEOF
)

// lexer is a port of NGINX's ngx_conf_read_token: same states, same errors.
type lexer struct {
	file  string
	src   []byte
	i     int
	line  int
	param bool // -g text: no blocks, other error wording
}

func (l *lexer) pos() Pos {
	if l.param {
		return Pos{File: commandLine}
	}
	return Pos{File: l.file, Line: l.line}
}

func (l *lexer) errorf(format string, args ...any) error {
	return &Error{Pos: l.pos(), Level: LevelEmerg, Msg: fmt.Sprintf(format, args...)}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// read returns the words of the next directive and what ended it.
func (l *lexer) read() ([]string, int, error) {
	var (
		args      []string
		lastSpace = true
		needSpace bool
		quoted    bool
		sQuoted   bool
		dQuoted   bool
		sharp     bool
		variable  bool
		start     int
		startLine int
	)
	for {
		if l.i >= len(l.src) {
			if len(args) > 0 || !lastSpace {
				if l.param {
					return nil, 0, l.errorf(`unexpected end of parameter, expecting ";"`)
				}
				return nil, 0, l.errorf(`unexpected end of file, expecting ";" or "}"`)
			}
			return nil, tokEOF, nil
		}
		if !lastSpace && l.i-start >= maxToken {
			l.line = startLine
			switch {
			case dQuoted:
				return nil, 0, l.errorf(`too long parameter, probably missing terminating '"' character`)
			case sQuoted:
				return nil, 0, l.errorf(`too long parameter, probably missing terminating "'" character`)
			}
			return nil, 0, l.errorf(`too long parameter "%s..." started`, l.src[start:start+10])
		}
		ch := l.src[l.i]
		l.i++
		if ch == '\n' {
			l.line++
			sharp = false
		}
		if sharp {
			continue
		}
		if quoted {
			quoted = false
			continue
		}
		if needSpace {
			switch {
			case isSpace(ch):
				lastSpace, needSpace = true, false
				continue
			case ch == ';':
				return args, tokEnd, nil
			case ch == '{':
				return args, tokBlockStart, nil
			case ch == ')':
				lastSpace, needSpace = true, false
			default:
				return nil, 0, l.errorf(`unexpected "%c"`, ch)
			}
		}
		if lastSpace {
			start, startLine = l.i-1, l.line
			if isSpace(ch) {
				continue
			}
			switch ch {
			case ';', '{':
				if len(args) == 0 {
					return nil, 0, l.errorf(`unexpected "%c"`, ch)
				}
				if ch == '{' {
					return args, tokBlockStart, nil
				}
				return args, tokEnd, nil
			case '}':
				if len(args) != 0 {
					return nil, 0, l.errorf(`unexpected "}"`)
				}
				return nil, tokBlockDone, nil
			case '#':
				sharp = true
				continue
			case '\\':
				quoted, lastSpace = true, false
				continue
			case '"':
				start++
				dQuoted, lastSpace = true, false
				continue
			case '\'':
				start++
				sQuoted, lastSpace = true, false
				continue
			case '$':
				variable, lastSpace = true, false
				continue
			default:
				lastSpace = false
			}
			continue
		}
		if ch == '{' && variable {
			continue
		}
		variable = false
		if ch == '\\' {
			quoted = true
			continue
		}
		if ch == '$' {
			variable = true
			continue
		}
		found := false
		switch {
		case dQuoted:
			if ch == '"' {
				dQuoted, needSpace, found = false, true, true
			}
		case sQuoted:
			if ch == '\'' {
				sQuoted, needSpace, found = false, true, true
			}
		case isSpace(ch) || ch == ';' || ch == '{':
			lastSpace, found = true, true
		}
		if found {
			args = append(args, unescape(l.src[start:l.i-1]))
			switch ch {
			case ';':
				return args, tokEnd, nil
			case '{':
				return args, tokBlockStart, nil
			}
		}
	}
}

// unescape copies a raw token, resolving \" \' \\ \t \r \n as NGINX does;
// any other backslash is kept.
func unescape(raw []byte) string {
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); i++ {
		if raw[i] == '\\' && i+1 < len(raw) {
			switch raw[i+1] {
			case '"', '\'', '\\':
				i++
			case 't':
				out = append(out, '\t')
				i++
				continue
			case 'r':
				out = append(out, '\r')
				i++
				continue
			case 'n':
				out = append(out, '\n')
				i++
				continue
			}
		}
		out = append(out, raw[i])
	}
	return string(out)
}

// parseTree reads a whole file (or -g text when param is set) into a tree
// of directives, with NGINX's syntax errors.
func parseTree(file string, src []byte, param bool) ([]*directive, error) {
	l := &lexer{file: file, src: src, line: 1, param: param}
	return l.block(false)
}

func (l *lexer) block(inBlock bool) ([]*directive, error) {
	var list []*directive
	for {
		args, kind, err := l.read()
		if err != nil {
			return nil, err
		}
		switch kind {
		case tokEOF:
			if inBlock {
				return nil, l.errorf(`unexpected end of file, expecting "}"`)
			}
			return list, nil
		case tokBlockDone:
			if !inBlock {
				return nil, l.errorf(`unexpected "}"`)
			}
			return list, nil
		}
		d := &directive{name: args[0], args: args[1:], pos: l.pos()}
		if kind == tokBlockStart {
			if l.param {
				return nil, l.errorf("block directives are not supported in -g option")
			}
			d.isBlock = true
			if d.block, err = l.block(true); err != nil {
				return nil, err
			}
			d.end = l.pos()
		}
		list = append(list, d)
	}
}
