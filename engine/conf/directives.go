package conf

import (
	"math/bits"
	"strings"
	"time"
)

// directiveSpec is one row of the directive table (directiveTable): all
// that conf knows about one directive in one set of contexts. The parser
// dispatches through it, -T prints through it, and finish runs its check.
// A name has two rows where its meaning differs by context: server is a
// block in stream and a directive in upstream; error_log, resolver and
// resolver_timeout are kept apart in main or upstream and inherited in
// stream and server.
type directiveSpec struct {
	name string
	// aliases are deprecated spellings of name: read as name, with a
	// warning.
	aliases []string
	// ctx are the contexts the directive is allowed in.
	ctx ctx
	// block: the directive takes a { } block (NGINX's NGX_CONF_BLOCK).
	block bool
	// min and max bound the number of arguments; max noMax: no limit.
	min, max int
	// repeat: the directive may appear more than once in one block;
	// otherwise a second one is `"x" directive is duplicate`.
	repeat bool

	// Exactly one of parse and merge is set. parse handles the directive
	// where it appears. merge handles a directive that a server inherits
	// from the stream level: it applies the directive to a level's values
	// and must validate fully, since applying it again when inheriting
	// cannot fail.
	parse func(p *parser, d *directive, c ctx) error
	merge func(p *parser, m *mergeable, d *directive) error
	// reset clears a level's values before its first directive is merged,
	// for repeatable merge directives whose values add up
	// (proxy_ssl_protocols, access_log, ...).
	reset func(m *mergeable)

	// mainDefault sets the default in the main context's values (main and
	// events directives), levelDefault in the values of the stream level
	// and of each server (merge directives). Nil: the zero value.
	mainDefault  func(m *Main)
	levelDefault func(m *mergeable)

	// pos says where the directive's position is kept.
	pos posSlot

	// format prints the directive for -T, in the innermost of its
	// contexts (a stream and server directive in each server, with its
	// effective value). When format is nil, unprinted says why -T leaves
	// the directive out.
	format    func(w *confWriter, at *formatAt)
	unprinted string

	// check runs once the whole configuration is read (finish): the
	// checks of main and events directives first, those of the others
	// once servers have inherited their values, and only when there is a
	// stream block. Nil: none.
	check func(p *parser) error
}

// noMax as a directiveSpec's max: no upper limit on the number of
// arguments.
const noMax = -1

// posSlot is where a directive's position is kept.
type posSlot uint8

const (
	posUnset   posSlot = iota // not said (the table test refuses it)
	posNowhere                // not kept: ignored directives, include, zone
	posValue                  // in the value the directive makes (Listen.Pos, Server.ProxyPassPos, ...)
	posMain                   // Main.Pos, by name
	posCore                   // Core.Pos of the level, by name
	posProxy                  // Proxy.Pos of the level, by name
	posSSL                    // SSL.Pos of the level, by name
)

// innermost returns the innermost context of the set c: the one -T prints
// a directive allowed in c in.
func (c ctx) innermost() ctx {
	if c == 0 {
		return 0
	}
	return 1 << (bits.Len(uint(c)) - 1)
}

// directiveIndex is the directive table by name, for the parser.
type directiveIndex struct {
	table []directiveSpec
	// byName lists each name's rows in table order; alias maps a
	// deprecated spelling to the name it stands for.
	byName map[string][]*directiveSpec
	alias  map[string]string
}

func newDirectiveIndex() *directiveIndex {
	t := directiveTable()
	ix := &directiveIndex{table: t, byName: make(map[string][]*directiveSpec, len(t)), alias: map[string]string{}}
	for i := range t {
		r := &t[i]
		ix.byName[r.name] = append(ix.byName[r.name], r)
		for _, a := range r.aliases {
			ix.alias[a] = r.name
		}
	}
	return ix
}

// mergeRow returns the row that merges name at stream and server level.
func (ix *directiveIndex) mergeRow(name string) *directiveSpec {
	for _, r := range ix.byName[name] {
		if r.merge != nil {
			return r
		}
	}
	return nil
}

// slot is the row of a stream and server directive with one argument that
// parse reads into the field of a level that field returns; -T prints it
// with show. Its default is def.
func slot[T any](name string, pos posSlot, def T, field func(m *mergeable) *T,
	parse func(d *directive, v *T) error, show func(v T) string) directiveSpec {
	return directiveSpec{
		name: name, ctx: ctxStream | ctxServer, min: 1, max: 1, pos: pos,
		merge:        func(_ *parser, m *mergeable, d *directive) error { return parse(d, field(m)) },
		levelDefault: func(m *mergeable) { *field(m) = def },
		format:       func(w *confWriter, at *formatAt) { w.line(name, show(*field(at.lvl))) },
	}
}

// optSlot is slot for a directive that -T prints only when its value is
// not the zero value (the default).
func optSlot[T comparable](name string, pos posSlot, field func(m *mergeable) *T,
	parse func(d *directive, v *T) error, show func(v T) string) directiveSpec {
	var zero T
	r := slot(name, pos, zero, field, parse, show)
	r.levelDefault = nil
	r.format = func(w *confWriter, at *formatAt) {
		if v := *field(at.lvl); v != zero {
			w.line(name, show(v))
		}
	}
	return r
}

// mergeable is what stream level passes down to servers.
type mergeable struct {
	Proxy      Proxy
	Core       Core
	AccessLogs []AccessLog
	ErrorLogs  []ErrorLog
}

// defaultLevel returns a stream or server level's values before any
// directive: each merge directive's default.
func (ix *directiveIndex) defaultLevel() mergeable {
	m := mergeable{}
	m.Proxy.Pos, m.Proxy.SSL.Pos, m.Core.Pos = map[string]Pos{}, map[string]Pos{}, map[string]Pos{}
	for i := range ix.table {
		if f := ix.table[i].levelDefault; f != nil {
			f(&m)
		}
	}
	return m
}

// defaultMain returns the main context's values before any directive:
// each main and events directive's default.
func (ix *directiveIndex) defaultMain() Main {
	m := Main{Pos: map[string]Pos{}}
	for i := range ix.table {
		if f := ix.table[i].mainDefault; f != nil {
			f(&m)
		}
	}
	return m
}

// setPos records the position of the directive name, whose position goes
// where slot says.
func (m *mergeable) setPos(slot posSlot, name string, pos Pos) {
	switch slot {
	case posCore:
		m.Core.Pos[name] = pos
	case posProxy:
		m.Proxy.Pos[name] = pos
	case posSSL:
		m.Proxy.SSL.Pos[name] = pos
	}
}

// DefaultProxySSLCiphers is tlsrelay's default proxy_ssl_ciphers: the
// ECDHE suites with AEAD ciphers only (no RSA key exchange, no CBC). NGINX's
// default is OpenSSL's "DEFAULT"; docs/tls.md says where they differ. It
// equals tlsbridge.DefaultCiphers (this package imports nothing of
// tlsrelay's; a tlsbridge test checks that the two agree).
const DefaultProxySSLCiphers = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" +
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" +
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

// Defaults of the stream and server directives that are not the zero
// value and have no exported constant.
const (
	defaultProxyConnectTimeout = 60 * time.Second
	defaultProxyTimeout        = 10 * time.Minute
	defaultBufferSize          = 16 << 10
	defaultCoreTimeout         = 30 * time.Second // resolver, preread and PROXY header timeouts
	defaultCertCacheInactive   = 10 * time.Second
	defaultCertCacheValid      = 60 * time.Second
)

// isSkipped reports NGINX main-context directives and blocks that have
// nothing to do with a stream proxy; they are skipped with a warning.
func isSkipped(name string) bool {
	switch name {
	case "user", "load_module", "master_process", "env",
		"timer_resolution", "pcre_jit", "lock_file", "worker_priority", "working_directory",
		"worker_rlimit_core", "ssl_engine", "thread_pool", "debug_points", "google_perftools_profiles",
		"ssl_object_cache_inheritable", "http", "mail", "quic_bpf":
		return true
	}
	return false
}

// isUnsupported reports directives of NGINX's stream modules that tlsrelay
// does not implement: refused as `"X" is not supported`.
func isUnsupported(name string) bool {
	if strings.HasPrefix(name, "ssl_") || strings.HasPrefix(name, "js_") ||
		strings.HasPrefix(name, "geoip_") || strings.HasPrefix(name, "zone_sync") ||
		strings.HasPrefix(name, "mqtt") {
		return true
	}
	switch name {
	case "geo", "return", "set", "pass", "server_name",
		"state", "keyval", "keyval_zone", "proxy_session_drop",
		"proxy_bind_dynamic", "open_log_file_cache", "status_zone", "sticky", "ntlm",
		"keepalive", "keepalive_timeout", "keepalive_requests", "keepalive_time", "queue",
		"least_conn_two", "otel_exporter", "otel_trace", "otel_span_name", "proxy_pass_error_message":
		return true
	}
	return false
}
