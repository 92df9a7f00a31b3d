package conf

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/tlsrelay/tlsrelay/internal/safefile"
	"github.com/tlsrelay/tlsrelay/internal/syserr"
)

// LoadOptions are the command-line inputs to Load and Parse.
type LoadOptions struct {
	// Prefix is NGINX's -p: relative pid and error_log paths are taken
	// from it. "": the directory of the configuration file.
	Prefix string
	// Directives is NGINX's -g: main-context directives parsed after the
	// file, as if appended to it.
	Directives string
}

// maxIncludeDepth bounds nested includes (NGINX has no bound and recurses
// until it runs out of file descriptors on an include loop).
const maxIncludeDepth = 32

// Load reads the configuration file at path with its includes and returns
// it validated, with the warnings to print (skipped NGINX directives,
// deprecated forms). Errors are *Error values with a position.
func Load(path string, opts LoadOptions) (*Config, []Warning, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, nil, fmt.Errorf("resolving %s: %w", path, err)
	}
	src, err := safefile.Read(abs, safefile.MaxConfig)
	if err != nil {
		return nil, nil, openError(Pos{}, "", abs, err)
	}
	return Parse(abs, src, opts)
}

// Parse is Load for a configuration already in memory; name stands for its
// file name in positions, and its directory is where relative includes and
// certificate paths are taken from (the current directory when name has
// none).
func Parse(name string, src []byte, opts LoadOptions) (*Config, []Warning, error) {
	confPrefix := filepath.Dir(name)
	if abs, err := filepath.Abs(confPrefix); err == nil {
		confPrefix = abs
	}
	prefix := opts.Prefix
	if prefix == "" {
		prefix = confPrefix
	} else if abs, err := filepath.Abs(prefix); err == nil {
		prefix = abs
	}
	p := &parser{
		ix:  newDirectiveIndex(),
		cfg: &Config{File: name, Prefix: prefix, ConfPrefix: confPrefix},
	}
	p.cfg.Main = p.ix.defaultMain()
	tree, err := parseTree(name, src, false)
	if err != nil {
		return nil, nil, err
	}
	if err := p.walk(tree, ctxMain); err != nil {
		return nil, p.warnings, err
	}
	if opts.Directives != "" {
		tree, err := parseTree(commandLine, []byte(opts.Directives), true)
		if err != nil {
			return nil, p.warnings, err
		}
		if err := p.walk(tree, ctxMain); err != nil {
			return nil, p.warnings, err
		}
	}
	if err := p.finish(); err != nil {
		return nil, p.warnings, err
	}
	return p.cfg, p.warnings, nil
}

// ctx is a configuration context, a bit so a directive can allow several.
type ctx uint

const (
	ctxMain ctx = 1 << iota
	ctxEvents
	ctxStream
	ctxServer
	ctxUpstream
)

// level is the stream or a server level of the mergeable settings: the
// directives written there (by name, in order) and their values applied to
// defaults, kept for duplicate checks and for stream-level inheritance.
type level struct {
	m   mergeable
	set map[string][]*directive
	// access are the level's allow and deny rules in order (one list for
	// both directives, which a per-directive merge would not keep).
	access []AccessRule
	// limits are the level's limit_conn directives; realIP its
	// set_real_ip_from addresses.
	limits []LimitConn
	realIP []AccessRule
}

func (p *parser) newLevel() *level {
	return &level{m: p.ix.defaultLevel(), set: map[string][]*directive{}}
}

// serverState is a server block being parsed.
type serverState struct {
	srv *Server
	lvl *level
	// seen are the directives written in the block, for duplicates.
	seen map[string]bool
}

// parser walks directive trees and builds the Config.
type parser struct {
	ix       *directiveIndex
	cfg      *Config
	warnings []Warning
	depth    int  // include depth
	replay   bool // re-applying directives when inheriting: no warnings

	// seenMain, streamSeen and upSeen are the directives written in the
	// main context and events block, the stream block and the upstream
	// block being parsed, for duplicates (upSeen also has "method" once
	// a balancing method is set).
	seenMain    map[string]bool
	streamLvl   *level
	streamSeen  map[string]bool
	servers     []*serverState
	server      *serverState // the server block being parsed
	upstream    *Upstream    // the upstream block being parsed
	upSeen      map[string]bool
	zoneSizes   map[string]int64
	zoneUsers   map[string]Pos
	backupPos   map[*Upstream]Pos // first backup server of each block
	listenAddrs map[string]bool
	// splitVars and mapVars are the variables the stream block's
	// split_clients and map blocks define, found before its directives
	// are parsed (NGINX's variables may be used above their definition);
	// defined are those whose block has been parsed.
	splitVars map[string]*SplitClients
	mapVars   map[string]*Map
	defined   map[string]bool
}

func (p *parser) warnf(pos Pos, format string, args ...any) {
	if p.replay {
		return
	}
	p.warnings = append(p.warnings, Warning{Pos: pos, Msg: fmt.Sprintf(format, args...)})
}

func (p *parser) walk(list []*directive, c ctx) error {
	for _, d := range list {
		if err := p.dispatch(d, c); err != nil {
			return err
		}
	}
	return nil
}

// dispatch runs one directive in context c through its row of the
// directive table, with NGINX's checks in NGINX's order: known name,
// context, block or not, number of arguments, duplicate.
func (p *parser) dispatch(d *directive, c ctx) error {
	// Every argument ends up in a Go string a system call may take (a
	// path, an address) or in a log line: a NUL byte would pass -t and
	// fail at start (open("run\x00.pid")), or cut a path short in C
	// libraries. One check here covers every directive, paths included.
	for _, a := range d.args {
		if strings.IndexByte(a, 0) >= 0 {
			return Errorf(d.pos, "NUL byte in the argument %q of the %q directive", a, d.name)
		}
	}
	if to, ok := p.ix.alias[d.name]; ok {
		p.warnf(d.pos, "the %q directive is deprecated, use the %q directive instead", d.name, to)
		alias := *d
		alias.name = to
		d = &alias
	}
	rows := p.ix.byName[d.name]
	if len(rows) == 0 {
		switch {
		case isSkipped(d.name):
			if c != ctxMain {
				return Errorf(d.pos, "%q directive is not allowed here", d.name)
			}
			p.warnf(d.pos, "%q directive is ignored: tlsrelay is a stream proxy only", d.name)
			return nil
		case isUnsupported(d.name):
			return Errorf(d.pos, "%q is not supported", d.name)
		}
		return Errorf(d.pos, "unknown directive %q", d.name)
	}
	for _, r := range rows {
		if r.ctx&c == 0 {
			continue
		}
		if !r.block && d.isBlock {
			return Errorf(d.pos, "directive %q is not terminated by \";\"", d.name)
		}
		if r.block && !d.isBlock {
			return Errorf(d.pos, "directive %q has no opening \"{\"", d.name)
		}
		if n := len(d.args); n < r.min || (r.max != noMax && n > r.max) {
			return Errorf(d.pos, "invalid number of arguments in %q directive", d.name)
		}
		if !r.repeat {
			seen := p.seenIn(c)
			if seen[d.name] {
				return Errorf(d.pos, "%q directive is duplicate", d.name)
			}
			seen[d.name] = true
		}
		if r.pos == posMain {
			p.cfg.Main.Pos[d.name] = d.pos
		}
		if r.merge != nil {
			return p.mergeable(d, c, r)
		}
		return r.parse(p, d, c)
	}
	return Errorf(d.pos, "%q directive is not allowed here", d.name)
}

// seenIn returns the directives already written in the block of context c
// being parsed (main and events count as one, as NGINX's core module
// keeps them).
func (p *parser) seenIn(c ctx) map[string]bool {
	switch c {
	case ctxStream:
		return p.streamSeen
	case ctxServer:
		return p.server.seen
	case ctxUpstream:
		return p.upSeen
	}
	if p.seenMain == nil {
		p.seenMain = map[string]bool{}
	}
	return p.seenMain
}

// mergeable records a directive that may appear at stream and server
// level (its row has merge): validates it by applying it to the level's
// values, and keeps it for inheritance.
func (p *parser) mergeable(d *directive, c ctx, r *directiveSpec) error {
	lvl := p.streamLvl
	if c == ctxServer {
		lvl = p.server.lvl
	}
	prev := lvl.set[d.name]
	if len(prev) == 0 && r.reset != nil {
		r.reset(&lvl.m)
	}
	if err := r.merge(p, &lvl.m, d); err != nil {
		return err
	}
	lvl.m.setPos(r.pos, d.name, d.pos)
	lvl.set[d.name] = append(prev, d)
	return nil
}

// include reads the files an include names and runs their directives in
// the current context. Relative names are taken from the directory of the
// main file; a glob matching nothing is fine, a missing plain file is not.
func (p *parser) include(d *directive, c ctx) error {
	if p.depth >= maxIncludeDepth {
		return Errorf(d.pos, "too many nested includes (%d): include loop?", maxIncludeDepth)
	}
	name := p.confPath(d.args[0])
	files := []string{name}
	if strings.ContainsAny(name, "*?[") {
		m, err := filepath.Glob(name)
		if err != nil {
			return Errorf(d.pos, "glob() %q failed: %v", name, err)
		}
		sort.Strings(m)
		files = m
	}
	for _, f := range files {
		src, err := safefile.Read(f, safefile.MaxConfig)
		if err != nil {
			return openError(d.pos, "include", f, err)
		}
		tree, err := parseTree(f, src, false)
		if err != nil {
			return err
		}
		p.depth++
		err = p.walk(tree, c)
		p.depth--
		if err != nil {
			return err
		}
	}
	return nil
}

// openError words a failed open like NGINX: open() "x" failed (2: No such
// file or directory). A file safefile refused (not a regular file, over
// its cap) is named with the directive that named it ("" for the main
// file): "include" file "/dev/zero" cannot be read: not a regular file (a
// character device).
func openError(pos Pos, directive, name string, err error) error {
	if errors.Is(err, safefile.ErrNotRegular) || errors.Is(err, safefile.ErrTooLarge) {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		what := "configuration file"
		if directive != "" {
			what = fmt.Sprintf("%q file", directive)
		}
		return &Error{Pos: pos, Level: LevelEmerg, Err: err, Msg: fmt.Sprintf("%s %q cannot be read: %v", what, name, err)}
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return &Error{Pos: pos, Level: LevelEmerg, Err: err,
			Msg: fmt.Sprintf("open() %q failed (%s)", name, syserr.Paren(errno))}
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return &Error{Pos: pos, Level: LevelEmerg, Err: err, Msg: fmt.Sprintf("open() %q failed (%v)", name, err)}
}

// confPath makes a file name absolute against the configuration prefix
// (the main file's directory), as ngx_conf_full_name(..., 1). Names with
// variables are returned as written.
func (p *parser) confPath(name string) string {
	if name == "" || filepath.IsAbs(name) || strings.Contains(name, "$") {
		return name
	}
	return filepath.Join(p.cfg.ConfPrefix, name)
}

// prefixPath makes a file name absolute against the prefix (-p), as
// ngx_conf_full_name(..., 0) does for pid and logs. "stderr", syslog: and
// memory: targets and names with variables are returned as written.
func (p *parser) prefixPath(name string) string {
	if name == "" || name == "stderr" || filepath.IsAbs(name) || strings.Contains(name, "$") ||
		strings.HasPrefix(name, "syslog:") || strings.HasPrefix(name, "memory:") {
		return name
	}
	return filepath.Join(p.cfg.Prefix, name)
}
