package conf

import (
	"fmt"
	"strconv"
	"strings"
)

// Logs: log_format and access_log (ngx_stream_log_module), error_log.

// BuiltinLogFormat is the name of tlsrelay's built-in log format, which
// `access_log path tlsrelay;` uses without a log_format (NGINX's stream
// module has none; its http module's is "combined"). Its text is
// BuiltinLogFormatText.
const BuiltinLogFormat = "tlsrelay"

// BuiltinLogFormatText is the built-in format: the client, the time, the
// status and bytes as NGINX's documented stream example logs them, then
// the upstream, the TLS version, whether the handshake was full or
// resumed, the key exchange group, the ALPN protocol, the failure class
// and why the session ended. Empty values stay empty (key=).
const BuiltinLogFormatText = `$remote_addr [$time_local] $status $bytes_sent $bytes_received $session_time ` +
	`upstream="$upstream_addr" tls=$upstream_ssl_protocol handshake=$upstream_ssl_handshake ` +
	`group=$upstream_ssl_curve alpn=$upstream_ssl_alpn error=$upstream_ssl_error close="$close_reason"`

// builtinLogFormats returns the stream block's log formats before any
// log_format: the built-in one, compiled at d (the stream block).
func builtinLogFormats(d *directive) (map[string]*LogFormat, error) {
	t, err := compileTemplate(BuiltinLogFormatText, knownVariable)
	if err != nil {
		return nil, fmt.Errorf("compiling the built-in log format: %w", err) // a bug
	}
	return map[string]*LogFormat{BuiltinLogFormat: {Name: BuiltinLogFormat, Escape: "default",
		Format: BuiltinLogFormatText, Template: t, Pos: d.pos, Builtin: true}}, nil
}

// logFormat is `log_format name [escape=default|json|none] string ...`.
func (p *parser) logFormat(d *directive, _ ctx) error {
	name := d.args[0]
	if f, ok := p.cfg.Stream.LogFormats[name]; ok {
		if f.Builtin {
			return Errorf(d.pos, "duplicate \"log_format\" name %q: it is tlsrelay's built-in format", name)
		}
		return Errorf(d.pos, "duplicate \"log_format\" name %q", name)
	}
	f := &LogFormat{Name: name, Escape: "default", Pos: d.pos}
	rest := d.args[1:]
	if v, ok := strings.CutPrefix(rest[0], "escape="); ok {
		switch v {
		case "default", "json", "none":
			f.Escape = v
		default:
			return Errorf(d.pos, "unknown log format escaping %q", v)
		}
		rest = rest[1:]
		if len(rest) == 0 {
			return Errorf(d.pos, "invalid number of arguments in \"log_format\" directive")
		}
	}
	f.Format = strings.Join(rest, "")
	t, err := p.compileAt(d, f.Format)
	if err != nil {
		return err
	}
	f.Template = t
	p.cfg.Stream.LogFormats[name] = f
	return nil
}

// mergeAccessLog is `access_log path format [buffer=size] [gzip[=level]]
// [flush=time] [if=condition] | off`.
func mergeAccessLog(p *parser, m *mergeable, d *directive) error {
	if d.args[0] == "off" {
		if len(d.args) > 1 {
			return Errorf(d.pos, "invalid parameter %q", d.args[1])
		}
		m.AccessLogs = append(m.AccessLogs, AccessLog{Pos: d.pos, Off: true})
		return nil
	}
	l := AccessLog{Pos: d.pos, Path: p.prefixPath(d.args[0])}
	pathT, err := p.compileAt(d, l.Path)
	if err != nil {
		return err
	}
	if pathT.HasVars() {
		l.PathTemplate = pathT
	}
	if len(d.args) < 2 {
		return Errorf(d.pos, "log format is not specified")
	}
	l.Format = d.args[1]
	if _, ok := p.cfg.Stream.LogFormats[l.Format]; !ok {
		return Errorf(d.pos, "unknown log format %q", l.Format)
	}
	for _, a := range d.args[2:] {
		name, val, hasVal := strings.Cut(a, "=")
		switch {
		case hasVal && name == "buffer":
			n, ok := ParseSize(val)
			if !ok {
				return Errorf(d.pos, "invalid buffer size %q", val)
			}
			l.Buffer = n
		case name == "gzip":
			l.Gzip = 1
			if hasVal {
				n, ok := atoiInt(val)
				if !ok || n < 1 || n > 9 {
					return Errorf(d.pos, "invalid compression level %q", val)
				}
				l.Gzip = n
			}
		case hasVal && name == "flush":
			t, ok := ParseDuration(val, false)
			if !ok {
				return Errorf(d.pos, "invalid flush time %q", val)
			}
			l.Flush = t
		case hasVal && name == "if":
			t, err := p.compileAt(d, val)
			if err != nil {
				return err
			}
			l.If, l.IfTemplate = val, t
		default:
			return Errorf(d.pos, "invalid parameter %q", a)
		}
	}
	if l.Flush != 0 && l.Buffer == 0 && l.Gzip == 0 {
		return Errorf(d.pos, "no buffer is defined for access_log %q", d.args[0])
	}
	if l.PathTemplate != nil && (l.Buffer != 0 || l.Gzip != 0) {
		// NGINX's words: a file opened per line has no buffer to hold.
		return Errorf(d.pos, "buffered logs cannot have variables in name")
	}
	if l.Gzip != 0 && l.Buffer == 0 {
		l.Buffer = 64 << 10
	}
	m.AccessLogs = append(m.AccessLogs, l)
	return nil
}

func (p *parser) mainErrorLog(d *directive, _ ctx) error {
	l, err := parseErrorLog(p, d)
	if err != nil {
		return err
	}
	p.cfg.Main.ErrorLog = append(p.cfg.Main.ErrorLog, l)
	return nil
}

func mergeErrorLog(p *parser, m *mergeable, d *directive) error {
	l, err := parseErrorLog(p, d)
	if err != nil {
		return err
	}
	m.ErrorLogs = append(m.ErrorLogs, l)
	return nil
}

// parseErrorLog is `error_log file [level]` (ngx_log_set_levels): one
// level, plus any debug_* masks, which tlsrelay treats as debug.
func parseErrorLog(p *parser, d *directive) (ErrorLog, error) {
	l := ErrorLog{Path: p.prefixPath(d.args[0]), Level: "error", Pos: d.pos}
	levelSet := false
	for _, a := range d.args[1:] {
		switch a {
		case "debug", "info", "notice", "warn", "error", "crit", "alert", "emerg":
			if levelSet {
				return ErrorLog{}, Errorf(d.pos, "duplicate log level %q", a)
			}
			l.Level, levelSet = a, true
		default:
			if !strings.HasPrefix(a, "debug_") || !isDebugMask(a) {
				return ErrorLog{}, Errorf(d.pos, "invalid log level %q", a)
			}
			if !levelSet {
				l.Level = "debug"
			}
		}
	}
	return l, nil
}

func isDebugMask(s string) bool {
	switch s {
	case "debug_core", "debug_alloc", "debug_mutex", "debug_event", "debug_http", "debug_mail", "debug_stream":
		return true
	}
	return false
}

// formatErrorLogs prints error_log directives for -T.
func formatErrorLogs(w *confWriter, logs []ErrorLog) {
	for _, l := range logs {
		w.line("error_log", l.Path, l.Level)
	}
}

// formatAccessLogs prints a server's access_log directives for -T ("off"
// for none).
func formatAccessLogs(w *confWriter, at *formatAt) {
	if len(at.lvl.AccessLogs) == 0 {
		w.line("access_log", "off")
	}
	for _, l := range at.lvl.AccessLogs {
		args := []string{l.Path, l.Format}
		if l.Buffer != 0 {
			args = append(args, "buffer="+formatSize(l.Buffer))
		}
		if l.Gzip != 0 {
			args = append(args, "gzip="+strconv.Itoa(l.Gzip))
		}
		if l.Flush != 0 {
			args = append(args, "flush="+formatDuration(l.Flush))
		}
		if l.If != "" {
			args = append(args, "if="+l.If)
		}
		w.line("access_log", args...)
	}
}

// formatLogFormats prints the log_format directives in name order.
func formatLogFormats(w *confWriter, at *formatAt) {
	st := at.cfg.Stream
	for _, name := range sortedKeys(st.LogFormats) {
		f := st.LogFormats[name]
		if f.Builtin {
			continue
		}
		w.line("log_format", name, "escape="+f.Escape, f.Format)
	}
}
