package engine

import (
	"crypto/tls"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/engine/errlog"
	"github.com/tlsrelay/tlsrelay/engine/logfile"
	"github.com/tlsrelay/tlsrelay/pool/dial"
	"github.com/tlsrelay/tlsrelay/tlsbridge"
)

// The access log writes one line per session when it ends, in a
// log_format of NGINX's stream log module. Variables are compiled once
// into segments; a line is rendered into the loop's scratch buffer and
// handed to the file's writer, which is shared by every loop (one mutex).

// varID names a log variable.
type varID uint8

const (
	varLiteral varID = iota
	varRemoteAddr
	varRemotePort
	varServerAddr
	varServerPort
	varProtocol
	varBytesSent
	varBytesReceived
	varSessionTime
	varStatus
	varConnection
	varPid
	varHostname
	varMsec
	varTimeISO8601
	varTimeLocal
	varNginxVersion
	varUpstreamAddr
	varUpstreamBytesSent
	varUpstreamBytesReceived
	varUpstreamConnectTime
	varUpstreamFirstByteTime
	varUpstreamSessionTime
	varUpstreamTCPConnectTime
	varUpstreamSSLProtocol
	varUpstreamSSLCipher
	varUpstreamSSLSessionReused
	varUpstreamSSLHandshakeTime
	varUpstreamSSLServerSubject
	varUpstreamSSLError
	varUpstreamSSLALPN
	varUpstreamSSLCurve
	varUpstreamSSLHandshake
	varLimitConnStatus
	varCloseReason
	varPPAddr
	varPPPort
	varPPServerAddr
	varPPServerPort
	varPPTLV // $proxy_protocol_tlv_NAME; the segment's lit is NAME
	varKey   // a split_clients or map variable; the segment's key
	varEmpty // a variable tlsrelay knows but cannot fill: "-" or ""
)

// logVarNames maps variable names to ids. The upstream_ssl_* and
// upstream_tcp_connect_time variables and close_reason are tlsrelay's own
// (NGINX has no upstream TLS variables in its stream module).
var logVarNames = map[string]varID{
	"remote_addr": varRemoteAddr, "remote_port": varRemotePort,
	"server_addr": varServerAddr, "server_port": varServerPort,
	"protocol": varProtocol, "bytes_sent": varBytesSent, "bytes_received": varBytesReceived,
	"session_time": varSessionTime, "status": varStatus, "connection": varConnection,
	"pid": varPid, "hostname": varHostname, "msec": varMsec,
	"time_iso8601": varTimeISO8601, "time_local": varTimeLocal, "nginx_version": varNginxVersion,
	"upstream_addr": varUpstreamAddr, "upstream_bytes_sent": varUpstreamBytesSent,
	"upstream_bytes_received": varUpstreamBytesReceived, "upstream_connect_time": varUpstreamConnectTime,
	"upstream_first_byte_time": varUpstreamFirstByteTime, "upstream_session_time": varUpstreamSessionTime,
	"upstream_tcp_connect_time": varUpstreamTCPConnectTime,
	"upstream_ssl_protocol":     varUpstreamSSLProtocol, "upstream_ssl_cipher": varUpstreamSSLCipher,
	"upstream_ssl_session_reused": varUpstreamSSLSessionReused,
	"upstream_ssl_handshake_time": varUpstreamSSLHandshakeTime,
	"upstream_ssl_server_subject": varUpstreamSSLServerSubject,
	"upstream_ssl_error":          varUpstreamSSLError,
	"upstream_ssl_alpn":           varUpstreamSSLALPN,
	"upstream_ssl_curve":          varUpstreamSSLCurve,
	"upstream_ssl_handshake":      varUpstreamSSLHandshake,
	"limit_conn_status":           varLimitConnStatus,
	"close_reason":                varCloseReason,
	"proxy_protocol_addr":         varPPAddr,
	"proxy_protocol_port":         varPPPort,
	"proxy_protocol_server_addr":  varPPServerAddr,
	"proxy_protocol_server_port":  varPPServerPort,
}

// logSegment is a literal or a variable of a compiled log format.
type logSegment struct {
	id  varID
	lit string
	key *hashTemplate // varKey's
}

type escapeMode uint8

const (
	escapeDefault escapeMode = iota
	escapeJSON
	escapeNone
)

// logFormat is a compiled log_format.
type logFormat struct {
	segs   []logSegment
	escape escapeMode
}

// compileFormat turns a log format, compiled by conf, into segments.
// conf has refused the names that neither NGINX nor tlsrelay define; a
// known one tlsrelay cannot fill (a regex capture, $binary_remote_addr) is
// rendered empty.
func compileFormat(t *conf.Template, esc string, vars *sessionVars) *logFormat {
	lf := &logFormat{}
	switch esc {
	case "json":
		lf.escape = escapeJSON
	case "none":
		lf.escape = escapeNone
	}
	if !t.HasVars() {
		if t.Text != "" {
			lf.segs = append(lf.segs, logSegment{lit: t.Text})
		}
		return lf
	}
	for _, p := range t.Parts {
		if p.Var == "" {
			lf.segs = append(lf.segs, logSegment{lit: p.Lit})
			continue
		}
		if tlv, isTLV := strings.CutPrefix(p.Var, "proxy_protocol_tlv_"); isTLV {
			lf.segs = append(lf.segs, logSegment{id: varPPTLV, lit: tlv})
			continue
		}
		if vars != nil && vars.has(p.Var) {
			lf.segs = append(lf.segs, logSegment{id: varKey, key: compileHashKey(&conf.Template{Text: p.Var, Parts: []conf.TemplatePart{p}}, vars)})
			continue
		}
		id, ok := logVarNames[p.Var]
		if !ok {
			id = varEmpty
		}
		lf.segs = append(lf.segs, logSegment{id: id})
	}
	return lf
}

// accessLog is one access_log directive of a server.
type accessLog struct {
	w      *logfile.File
	format *logFormat
	cond   *logFormat // if=; nil: always
	// path, for a path with variables (w nil): the file is opened in
	// files for each line.
	path  *logFormat
	files *logfile.Files
}

// logAccess writes the session's line to each of its server's access
// logs. Runs on the session's loop, with the loop's scratch buffer.
func (s *session) logAccess(now time.Time) {
	for _, al := range s.srv.accessLogs {
		if al.cond != nil {
			v := s.render(s.lp.logScratch[:0], al.cond, now)
			if len(v) == 0 || (len(v) == 1 && v[0] == '0') {
				continue
			}
		}
		line := s.render(s.lp.logScratch[:0], al.format, now)
		line = append(line, '\n')
		if al.path != nil {
			s.logToPath(al, line, now)
		} else if err := al.w.Write(line, now); err != nil && s.e.log.Enabled(errlog.LevelAlert) {
			s.e.log.Logf(errlog.LevelAlert, 0, "writing access log %q: %v", al.w.Path(), err)
		}
		s.lp.logScratch = line[:0]
	}
}

// logToPath writes line to the file al's path names for this session,
// opened for the line and closed after it (unless another plan or line
// holds it), as NGINX does without open_log_file_cache. A path that comes
// out empty, relative, or with a ".." component is refused and logged:
// variables must not walk the file system. Runs on the session's loop.
func (s *session) logToPath(al accessLog, line []byte, now time.Time) {
	path := string(s.render(nil, al.path, now))
	if !filepath.IsAbs(path) || slices.Contains(strings.Split(path, "/"), "..") || strings.ContainsRune(path, 0) {
		s.e.log.Logf(errlog.LevelError, s.id, "access log path %q is not an absolute path without \"..\": not written", path)
		return
	}
	w, err := al.files.Acquire(path, 0, 0, 0)
	if err == nil {
		err = w.Write(line, now)
		al.files.Release(w)
	}
	if err != nil && s.e.log.Enabled(errlog.LevelAlert) {
		s.e.log.Logf(errlog.LevelAlert, s.id, "writing access log %q: %v", path, err)
	}
}

// render appends the session's rendering of f to b.
func (s *session) render(b []byte, f *logFormat, now time.Time) []byte {
	for _, sg := range f.segs {
		if sg.id == varLiteral {
			b = append(b, sg.lit...)
			continue
		}
		start := len(b)
		switch sg.id {
		case varPPTLV:
			b = append(b, s.pp.TLV(sg.lit)...)
		case varKey:
			b = append(b, sg.key.eval(s.remote, s.local, s.pp)...)
		default:
			b = s.appendVar(b, sg.id, now)
		}
		if f.escape != escapeNone {
			b = escapeTail(b, start, f.escape)
		}
	}
	return b
}

// appendVar appends the value of one variable.
func (s *session) appendVar(b []byte, id varID, now time.Time) []byte {
	switch id {
	case varPPAddr, varPPPort, varPPServerAddr, varPPServerPort:
		if s.pp == nil || s.pp.Src == nil {
			return b
		}
		switch id {
		case varPPAddr:
			return append(b, hostOf(s.pp.Src)...)
		case varPPPort:
			return append(b, portOf(s.pp.Src)...)
		case varPPServerAddr:
			return append(b, hostOf(s.pp.Dst)...)
		}
		return append(b, portOf(s.pp.Dst)...)
	case varRemoteAddr:
		return append(b, hostOf(s.remote)...)
	case varRemotePort:
		return append(b, portOf(s.remote)...)
	case varServerAddr:
		return append(b, hostOf(s.local)...)
	case varServerPort:
		return append(b, portOf(s.local)...)
	case varProtocol:
		return append(b, "TCP"...)
	case varBytesSent:
		return strconv.AppendInt(b, s.toClient, 10)
	case varBytesReceived:
		return strconv.AppendInt(b, s.fromClient, 10)
	case varSessionTime:
		return appendSeconds(b, now.Sub(s.start))
	case varStatus:
		return strconv.AppendInt(b, int64(s.status), 10)
	case varConnection:
		return strconv.AppendUint(b, s.id, 10)
	case varPid:
		return append(b, s.e.pid...)
	case varHostname:
		return append(b, s.e.hostname...)
	case varMsec:
		ms := now.UnixMilli()
		b = strconv.AppendInt(b, ms/1000, 10)
		b = append(b, '.')
		return appendPadded(b, ms%1000, 3)
	case varTimeISO8601:
		return now.AppendFormat(b, "2006-01-02T15:04:05-07:00")
	case varTimeLocal:
		return now.AppendFormat(b, "02/Jan/2006:15:04:05 -0700")
	case varNginxVersion:
		return append(b, "1.22.1"...)
	case varUpstreamAddr:
		if len(s.attempts()) == 0 {
			return append(b, s.groupName()...)
		}
		return s.appendAttempts(b, func(b []byte, a *dial.Attempt, _ bool) []byte { return append(b, a.Peer.String()...) })
	case varUpstreamBytesSent:
		return s.appendAttempts(b, func(b []byte, _ *dial.Attempt, cur bool) []byte {
			if !cur {
				return append(b, '0')
			}
			return strconv.AppendInt(b, s.toUp, 10)
		})
	case varUpstreamBytesReceived:
		return s.appendAttempts(b, func(b []byte, _ *dial.Attempt, cur bool) []byte {
			if !cur {
				return append(b, '0')
			}
			return strconv.AppendInt(b, s.fromUp, 10)
		})
	case varUpstreamConnectTime:
		return s.appendAttempts(b, func(b []byte, a *dial.Attempt, _ bool) []byte {
			if a.Err != nil {
				return append(b, '-')
			}
			return appendSeconds(b, a.Connect+a.Handshake)
		})
	case varUpstreamTCPConnectTime:
		return s.appendAttempts(b, func(b []byte, a *dial.Attempt, _ bool) []byte {
			if a.Connect == 0 {
				return append(b, '-')
			}
			return appendSeconds(b, a.Connect)
		})
	case varUpstreamFirstByteTime:
		return s.appendAttempts(b, func(b []byte, a *dial.Attempt, cur bool) []byte {
			if !cur || s.firstByte == 0 {
				return append(b, '-')
			}
			return appendSeconds(b, s.firstByte-s.upOpened+a.Connect+a.Handshake)
		})
	case varUpstreamSessionTime:
		return s.appendAttempts(b, func(b []byte, a *dial.Attempt, cur bool) []byte {
			if !cur {
				return append(b, '-')
			}
			return appendSeconds(b, now.Sub(s.start)-s.upOpened+a.Connect+a.Handshake)
		})
	case varUpstreamSSLProtocol:
		if s.tlsVersion != 0 {
			return append(b, tlsbridge.HandshakeFacts{Version: s.tlsVersion}.VersionName()...)
		}
	case varUpstreamSSLCipher:
		if s.tlsCipher != 0 {
			return append(b, tls.CipherSuiteName(s.tlsCipher)...)
		}
	case varUpstreamSSLSessionReused:
		if s.tlsVersion != 0 {
			if s.tlsResumed {
				return append(b, 'r')
			}
			return append(b, '.')
		}
	case varUpstreamSSLHandshakeTime:
		if a := s.attempts(); s.tlsVersion != 0 && len(a) > 0 {
			return appendSeconds(b, a[len(a)-1].Handshake)
		}
	case varUpstreamSSLServerSubject:
		if s.tc != nil {
			if cs := s.tc.ConnectionState(); len(cs.PeerCertificates) > 0 {
				return append(b, cs.PeerCertificates[0].Subject.String()...)
			}
		}
	case varUpstreamSSLError:
		if s.readErr != nil {
			return append(b, tlsbridge.Classify(s.readErr).String()...)
		}
		a := s.attempts()
		for i := len(a) - 1; i >= 0; i-- {
			if err := a[i].Err; err != nil {
				if !a[i].Handshaking {
					// The TCP connect (or the PROXY header) failed:
					// nothing handshook.
					return append(b, "connect"...)
				}
				return append(b, tlsbridge.Classify(err).String()...)
			}
		}
	case varUpstreamSSLALPN:
		if s.tc != nil {
			return append(b, s.tc.ConnectionState().NegotiatedProtocol...)
		}
	case varUpstreamSSLCurve:
		if s.tc != nil {
			return append(b, tlsbridge.GroupName(s.tc.ConnectionState().CurveID)...)
		}
	case varUpstreamSSLHandshake:
		if s.tlsVersion != 0 {
			if s.tlsResumed {
				return append(b, "resumed"...)
			}
			return append(b, "full"...)
		}
	case varLimitConnStatus:
		return append(b, s.limitStatus.String()...)
	case varCloseReason:
		return append(b, s.reason.Text()...)
	}
	return b
}

// appendAttempts renders one value per upstream attempt, comma-separated,
// as NGINX's $upstream_* variables; cur marks the attempt the session
// relayed through.
func (s *session) appendAttempts(b []byte, f func(b []byte, a *dial.Attempt, cur bool) []byte) []byte {
	a := s.attempts()
	for i := range a {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = f(b, &a[i], i == len(a)-1 && s.up.state != sideNone)
	}
	return b
}

// appendSeconds renders d as NGINX does: seconds with millisecond
// resolution, "0.012".
func appendSeconds(b []byte, d time.Duration) []byte {
	ms := d.Milliseconds()
	b = strconv.AppendInt(b, ms/1000, 10)
	b = append(b, '.')
	return appendPadded(b, ms%1000, 3)
}

func appendPadded(b []byte, v int64, width int) []byte {
	var tmp [20]byte
	s := strconv.AppendInt(tmp[:0], v, 10)
	for i := len(s); i < width; i++ {
		b = append(b, '0')
	}
	return append(b, s...)
}

// escapeTail escapes b[start:] in place (by rebuilding the tail), as
// NGINX's log module: default escapes '"', '\\' and bytes outside 32..126
// as \xHH; json escapes as a JSON string body.
func escapeTail(b []byte, start int, mode escapeMode) []byte {
	clean := true
	for _, c := range b[start:] {
		if c == '"' || c == '\\' || c < 32 || c > 126 {
			clean = false
			break
		}
	}
	if clean {
		return b
	}
	val := append([]byte(nil), b[start:]...)
	b = b[:start]
	const hex = "0123456789ABCDEF"
	for _, c := range val {
		switch {
		case mode == escapeJSON && (c == '"' || c == '\\'):
			b = append(b, '\\', c)
		case mode == escapeJSON && c < 32:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
		case mode == escapeJSON:
			b = append(b, c)
		case c == '"' || c == '\\' || c < 32 || c > 126:
			b = append(b, '\\', 'x', hex[c>>4], hex[c&15])
		default:
			b = append(b, c)
		}
	}
	return b
}
