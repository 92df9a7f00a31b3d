package conf

import (
	"net/netip"
	"runtime"
	"strings"
	"time"
)

// Config is a parsed and validated configuration. Defaults are filled in:
// every field holds the value tlsrelay will use. A Config is not modified
// after Load or Parse return it; treat it as read-only.
type Config struct {
	// File is the main configuration file as given to Load (made absolute),
	// or the name given to Parse.
	File string
	// Prefix is the directory relative paths in pid and error_log are
	// taken from (NGINX's -p prefix).
	Prefix string
	// ConfPrefix is the directory of the main configuration file:
	// relative include, certificate, key, CA, CRL and password file paths
	// are taken from it (NGINX's conf_prefix).
	ConfPrefix string
	// Main holds the main-context and events settings.
	Main Main
	// Stream is the stream block; nil when the file has none (then there
	// is nothing to serve).
	Stream *Stream
}

// Main holds the main context and the events block.
type Main struct {
	// WorkerProcesses is the number of event loops; 0 means auto (one per
	// CPU), the default (NGINX's is 1: one loop would leave every other
	// CPU to the dialer's handshakes only).
	WorkerProcesses int
	// CPUAffinity pins event loops to CPUs (worker_cpu_affinity). Zero:
	// no pinning.
	CPUAffinity CPUAffinity
	// RlimitNofile raises RLIMIT_NOFILE at start (worker_rlimit_nofile).
	// 0: leave it alone.
	RlimitNofile int
	// ErrorLog lists the main-context error_log directives. Empty: the
	// engine logs to stderr (NGINX's compiled-in default is
	// logs/error.log; tlsrelay always runs in the foreground).
	ErrorLog []ErrorLog
	// PID is the pid file to write (absolute). "": none. NGINX writes
	// logs/nginx.pid by default; tlsrelay only when pid is set.
	PID string
	// Daemon is the value of daemon (NGINX default on). tlsrelay always
	// stays in the foreground; DaemonPos is set when daemon was written.
	Daemon    bool
	DaemonPos Pos
	// WorkerConnections bounds open connections per event loop (events {
	// worker_connections }), both sides counted as NGINX does. 0 (the
	// default; NGINX's is 512): derived from the descriptor limit
	// (ConnectionsPerLoop).
	WorkerConnections int
	// WorkerShutdownTimeout is worker_shutdown_timeout, as NGINX: once a
	// configuration is replaced (reload) or the process quits gracefully,
	// its sessions still open after this long are closed. 0 (the
	// default): no limit, sessions run to their natural end.
	WorkerShutdownTimeout time.Duration
	// MetricsListen is metrics_listen (tlsrelay's own directive): the
	// "host:port" (or "[v6]:port") address the Prometheus endpoint
	// (GET /metrics) listens on. "": no metrics endpoint (the default).
	// MetricsListenPos is where it was set.
	MetricsListen    string
	MetricsListenPos Pos
	// API is the api directive (the runtime API on metrics_listen); nil:
	// none (the default).
	API *API
	// Pos records where each main/events directive was set, by name.
	Pos map[string]Pos
}

// ConnectionsPerLoop is the worker_connections in force for a process
// whose descriptor limit (RLIMIT_NOFILE) is nofile: the directive's value
// or, when it is not set (tlsrelay's default, for the tens of thousands of
// mostly idle clients a gateway holds; NGINX's 512 would hold about 255
// sessions), the limit shared by the loops, less a reserve for the
// process's own files; 0 (no limit but the descriptors) when nofile is 0.
func (m *Main) ConnectionsPerLoop(nofile uint64) int {
	if m.WorkerConnections > 0 {
		return m.WorkerConnections
	}
	const reserve = 64 // logs, listeners, the door, certificates being read
	if nofile == 0 || nofile > 1<<30 {
		return 0
	}
	return max(int(nofile)-reserve, 64) / m.Loops()
}

// Loops is the number of event loops worker_processes asks for, auto (0)
// resolved to one per CPU.
func (m *Main) Loops() int {
	if m.WorkerProcesses <= 0 {
		return runtime.NumCPU()
	}
	return m.WorkerProcesses
}

// CPUAffinity is worker_cpu_affinity: either auto (with an optional mask
// of allowed CPUs) or one CPU mask per event loop, bit i = CPU i.
type CPUAffinity struct {
	Auto  bool
	Masks []uint64 // with Auto: at most one, the allowed CPUs
}

// ErrorLog is one error_log directive.
type ErrorLog struct {
	// Path is "stderr", a "syslog:..." or "memory:..." target as written,
	// or an absolute file path (relative paths are taken from the prefix).
	Path string
	// Level is the minimum level: debug, info, notice, warn, error
	// (default), crit, alert or emerg.
	Level string
	Pos   Pos
}

// Stream is the stream block.
type Stream struct {
	Pos Pos
	// Upstreams are the upstream blocks in file order, followed by the
	// implicit groups made for literal proxy_pass addresses (Implicit set).
	Upstreams []*Upstream
	// Servers are the server blocks in file order.
	Servers []*Server
	// LogFormats maps log_format names to formats, with tlsrelay's
	// built-in one (BuiltinLogFormat; NGINX's stream module has none):
	// access_log must name one (basic is NGINX's documented example, not
	// a default).
	LogFormats map[string]*LogFormat
	// LimitConnZones are the limit_conn_zone directives by zone name.
	LimitConnZones map[string]*LimitConnZone
	// ErrorLogs and AccessLogs are the stream-level logs (inherited by
	// servers that set none).
	ErrorLogs  []ErrorLog
	AccessLogs []AccessLog
	// Core holds the stream-level core settings (inherited by servers).
	Core Core
	// Proxy holds the stream-level proxy settings with defaults filled in.
	// Servers inherit what they do not set.
	Proxy Proxy
	// Matches are the match blocks by name (health_check match=).
	Matches map[string]*Match
	// SplitClients are the split_clients blocks in file order.
	SplitClients []*SplitClients
	// Maps are the map blocks in file order.
	Maps []*Map
	// HealthCheckTimeout is the stream level's health_check_timeout (0:
	// not set; servers then use DefaultHealthCheckTimeout) and
	// HealthCheckTimeoutPos where it was set.
	HealthCheckTimeout    time.Duration
	HealthCheckTimeoutPos Pos
}

// Upstream returns the upstream block called name (explicit blocks only;
// names compare case-insensitively, as proxy_pass matches them), or nil.
func (s *Stream) Upstream(name string) *Upstream {
	for _, u := range s.Upstreams {
		if !u.Implicit && strings.EqualFold(u.Name, name) {
			return u
		}
	}
	return nil
}

// Core holds the ngx_stream_core_module settings that may appear at stream
// and server level.
type Core struct {
	// TCPNoDelay is tcp_nodelay (default on), for both sides.
	TCPNoDelay bool
	// Resolver is the resolver directive; nil: none (names in proxy_pass
	// variables cannot be resolved; see NGINX).
	Resolver *Resolver
	// ResolverTimeout is resolver_timeout (default 30s).
	ResolverTimeout time.Duration
	// PrereadBufferSize (16k) and PrereadTimeout (30s) are accepted for
	// compatibility; tlsrelay has no preread phase.
	PrereadBufferSize int64
	PrereadTimeout    time.Duration
	// ProxyProtocolTimeout bounds reading a client's PROXY header (30s).
	ProxyProtocolTimeout time.Duration
	// LimitConnLogLevel (error), LimitConnStatus (503) and
	// LimitConnDryRun are limit_conn_log_level, limit_conn_status and
	// limit_conn_dry_run.
	LimitConnLogLevel string
	LimitConnStatus   int
	LimitConnDryRun   bool
	// Pos records where each core directive was set, by name.
	Pos map[string]Pos
}

// Resolver is the resolver directive.
type Resolver struct {
	// Addrs are the name servers as written (address[:port]; port 53
	// when absent).
	Addrs []string
	// Valid overrides the answers' TTL when non-zero (valid=).
	Valid time.Duration
	// IPv4 and IPv6 say which address families to look up (both default
	// on).
	IPv4, IPv6 bool
	Pos        Pos
}

// Server is a server block.
type Server struct {
	Pos Pos
	// Listen are the listen directives; at least one.
	Listen []Listen
	// ProxyPass is the proxy_pass argument as written; ProxyPassPos its
	// position.
	ProxyPass    string
	ProxyPassPos Pos
	// ProxyPassTemplate is ProxyPass compiled when it holds variables
	// (it is then evaluated per session and Upstream is nil); nil
	// otherwise.
	ProxyPassTemplate *Template
	// Upstream is the group sessions go to: the upstream block proxy_pass
	// names, or an implicit group (Upstream.Implicit) with the single
	// address proxy_pass gives, as NGINX makes one. Nil only when
	// ProxyPassVariables.
	Upstream *Upstream
	// Proxy holds the effective proxy settings: the server's own, else
	// the stream level's, else the defaults.
	Proxy Proxy
	// Core holds the effective core settings, merged the same way.
	Core Core
	// AccessLogs are the effective access logs (the server's, else the
	// stream level's). Empty: no access log (stream's default is off).
	AccessLogs []AccessLog
	// ErrorLogs are the effective error logs (the server's, else the
	// stream level's, else the main context's).
	ErrorLogs []ErrorLog
	// Access are the effective allow/deny rules in order: the server's,
	// else the stream level's (as NGINX's access module inherits them).
	// Empty: every client is allowed.
	Access []AccessRule
	// LimitConn are the effective limit_conn directives: the server's,
	// else the stream level's.
	LimitConn []LimitConn
	// RealIPFrom are the effective set_real_ip_from addresses (as allow
	// rules: All, Unix or Prefix): peers trusted to send the client's
	// address in a PROXY header.
	RealIPFrom []AccessRule
	// HealthCheck is the server's health_check; nil: none.
	HealthCheck *HealthCheck
	// HealthCheckTimeout is the effective health_check_timeout (the
	// server's, else the stream level's, else 5s); HealthCheckTimeoutPos
	// is set when the server itself has the directive.
	HealthCheckTimeout    time.Duration
	HealthCheckTimeoutPos Pos
}

// ProxyPassVariables reports whether proxy_pass holds variables: its
// value is then evaluated per session (ProxyPassTemplate).
func (s *Server) ProxyPassVariables() bool { return s.ProxyPassTemplate != nil }

// LimitConnZone is a limit_conn_zone directive: the key (text with
// variables) that sessions are counted by, in the named zone.
type LimitConnZone struct {
	Pos  Pos
	Name string
	Key  string
	// KeyTemplate is Key compiled; its variables are key variables
	// (isKeyVariable).
	KeyTemplate *Template
	Size        int64
}

// LimitConn is a limit_conn directive: at most Number sessions per key of
// the zone.
type LimitConn struct {
	Pos    Pos
	Zone   string
	Number int
}

// AccessRule is one allow or deny directive.
type AccessRule struct {
	Pos Pos
	// Deny is set for deny, clear for allow.
	Deny bool
	// All matches every client; Unix clients of unix-domain listeners;
	// otherwise Prefix (an address is a /32 or /128 prefix).
	All, Unix bool
	Prefix    netip.Prefix
}

// Listen is one listen directive.
type Listen struct {
	Pos Pos
	// Addr is the normalised address: "0.0.0.0:port" for a bare port,
	// "host:port", "[v6]:port", or "unix:/path".
	Addr string
	// Network is "tcp" or "unix".
	Network string
	// Backlog is the listen() backlog (backlog=, default 511).
	Backlog int
	// Rcvbuf and Sndbuf set SO_RCVBUF/SO_SNDBUF; 0 = system default.
	Rcvbuf, Sndbuf int64
	// ReusePort is reuseport: one socket per event loop (SO_REUSEPORT).
	ReusePort bool
	// ProxyProtocol is proxy_protocol: clients send a PROXY v1/v2 header.
	ProxyProtocol bool
	// Bind is bind: a separate bind() for this address.
	Bind bool
	// IPv6Only is ipv6only= (default on; meaningful for [::]).
	IPv6Only bool
	// Deferred is deferred (TCP_DEFER_ACCEPT).
	Deferred bool
	// FastOpen is fastopen=N (TCP_FASTOPEN queue); 0: off.
	FastOpen int
	// DefaultServer is default_server; accepted, it changes nothing (one
	// server per address).
	DefaultServer bool
	// KeepAlive is so_keepalive.
	KeepAlive KeepAlive
}

// KeepAliveMode is the form of a listen socket's so_keepalive; the zero
// value is "not set" (the system's default).
type KeepAliveMode int8

// so_keepalive forms.
const (
	KeepAliveOn     KeepAliveMode = 1  // so_keepalive=on
	KeepAliveOff    KeepAliveMode = -1 // so_keepalive=off
	KeepAliveCustom KeepAliveMode = 2  // so_keepalive=[idle]:[intvl]:[cnt]; zero fields keep the system's value
)

// KeepAlive is a listen socket's so_keepalive setting.
type KeepAlive struct {
	// Mode says which form so_keepalive took.
	Mode  KeepAliveMode
	Idle  time.Duration // TCP_KEEPIDLE
	Intvl time.Duration // TCP_KEEPINTVL
	Cnt   int           // TCP_KEEPCNT
}

// Proxy holds the ngx_stream_proxy_module settings of one level. In a
// Server it is the effective value: set at server level, else inherited
// from stream level, else NGINX's default.
type Proxy struct {
	// ConnectTimeout bounds the TCP connect and, afresh, the TLS
	// handshake (proxy_connect_timeout, default 60s).
	ConnectTimeout time.Duration
	// Timeout is the idle timeout of a session (proxy_timeout, 10m).
	Timeout time.Duration
	// BufferSize is the buffer per direction (proxy_buffer_size, 16k).
	BufferSize int64
	// NextUpstream enables trying the next server when establishing the
	// upstream fails (proxy_next_upstream, on).
	NextUpstream bool
	// NextUpstreamTries caps the tries; 0 = no limit.
	NextUpstreamTries int
	// NextUpstreamTimeout caps the time spent trying; 0 = no limit.
	NextUpstreamTimeout time.Duration
	// UploadRate and DownloadRate limit bytes per second read from the
	// client and from the upstream; 0 = no limit.
	UploadRate, DownloadRate int64
	// ProxyProtocol is proxy_protocol: 0 off, 1 PROXY v1 text, 2 v2
	// binary. Sent in clear before the TLS handshake.
	ProxyProtocol int
	// HalfClose is proxy_half_close (off).
	HalfClose bool
	// SocketKeepalive is proxy_socket_keepalive (off).
	SocketKeepalive bool
	// SocketRcvbuf and SocketSndbuf set the upstream socket's buffers;
	// 0 = system default.
	SocketRcvbuf, SocketSndbuf int64
	// Bind is proxy_bind; nil: off (the system picks the source address).
	Bind *Bind
	// Requests and Responses are proxy_requests and proxy_responses, UDP
	// only; parsed for compatibility, without effect on TCP. Responses
	// -1 means unlimited (the default).
	Requests, Responses int
	// SSL holds the proxy_ssl_* settings.
	SSL SSL
	// Pos records where each non-SSL proxy_* directive that produced this
	// value was written (keyed by directive name). Missing: default.
	Pos map[string]Pos
}

// Bind is proxy_bind.
type Bind struct {
	// Addr is the source address as written (may hold variables).
	Addr string
	// Template is Addr compiled when it holds variables; nil otherwise.
	Template *Template
	// Transparent binds to a non-local address (IP_TRANSPARENT).
	Transparent bool
}

// SSL holds the proxy_ssl_* settings of one level.
type SSL struct {
	// Enabled is proxy_ssl (off).
	Enabled bool
	// Certificate and CertificateKey are the client certificate chain and
	// key files (PEM; absolute, resolved against ConfPrefix unless they
	// hold variables). "": none.
	Certificate, CertificateKey string
	// PasswordFile holds passphrases for an encrypted key, one a line.
	PasswordFile string
	// Protocols are the enabled versions, default TLSv1.2 TLSv1.3; any of
	// SSLv2 SSLv3 TLSv1 TLSv1.1 TLSv1.2 TLSv1.3 in canonical spelling.
	Protocols []string
	// Ciphers is the OpenSSL cipher string for TLS <= 1.2; default
	// DefaultProxySSLCiphers (not NGINX's "DEFAULT"). Pos has
	// "proxy_ssl_ciphers" only when the user wrote it.
	Ciphers string
	// Name is proxy_ssl_name as written (may hold variables); "" means
	// the host part of proxy_pass (see docs/tls.md for how tlsrelay uses
	// each upstream server's own host instead of the group name).
	Name string
	// ServerName sends SNI (proxy_ssl_server_name, off).
	ServerName bool
	// Verify checks the upstream certificate and name (off).
	Verify bool
	// VerifyDepth is the maximum number of intermediates (1).
	VerifyDepth int
	// TrustedCertificate is the CA bundle for Verify.
	TrustedCertificate string
	// CRL is the PEM CRL file.
	CRL string
	// SessionReuse resumes TLS sessions (proxy_ssl_session_reuse, on).
	SessionReuse bool
	// ConfCommands are the proxy_ssl_conf_command directives in order.
	ConfCommands []ConfCommand
	// ALPN is the protocol list offered upstream (proxy_ssl_alpn).
	ALPN []string
	// Identities is proxy_ssl_verify_identity (tlsrelay's own): with
	// Verify, the upstream certificate must carry one of these identities
	// ("uri:spiffe://...", "dns:name", "cn:name"; ParseIdentity),
	// instead of matching Name.
	Identities []string
	// CertificateCache is proxy_ssl_certificate_cache.
	CertificateCache CertificateCache
	// KeyLog is proxy_ssl_key_log (an NGINX Plus directive): the file the
	// TLS secrets of every upstream handshake are appended to, in the NSS
	// key log format (SSLKEYLOGFILE), so that a capture can be decrypted.
	// Absolute; a relative path is taken from the prefix, as log files
	// are. "": none (the default). For debugging only: Insecure warns.
	KeyLog string
	// Watch is proxy_ssl_watch (tlsrelay's own directive): how often the
	// files of the client certificate, its key and password file, the
	// trusted certificates and the CRL are polled for changes, which are
	// then loaded without a reload. 0: off (the default). At least one
	// second. Inherited from the stream level only by servers with
	// proxy_ssl on and something to watch; elsewhere it is 0.
	Watch time.Duration
	// Prewarm is proxy_ssl_prewarm (tlsrelay's own directive): upstream
	// connections kept ready, handshake done, per peer (prewarm.go).
	// Inherited from the stream level only by servers with proxy_ssl on;
	// elsewhere it is off.
	Prewarm Prewarm
	// Pos records where each proxy_ssl* directive that produced this value
	// was written, keyed by directive name ("proxy_ssl_certificate", ...).
	// Missing: default. For proxy_ssl_conf_command see ConfCommand.Pos.
	Pos map[string]Pos
}

// ConfCommand is one proxy_ssl_conf_command (an OpenSSL SSL_CONF_cmd).
type ConfCommand struct {
	Name, Value string
	Pos         Pos
}

// CertificateCache is proxy_ssl_certificate_cache: a cache for
// certificates named with variables. Max 0 means off (the default).
type CertificateCache struct {
	Max      int
	Inactive time.Duration // default 10s
	Valid    time.Duration // default 60s
}

// Upstream is an upstream block, or the implicit group NGINX makes for a
// proxy_pass to a literal address.
type Upstream struct {
	// Name is the block's name; for an implicit group the proxy_pass
	// address as written.
	Name string
	Pos  Pos
	// Implicit is set for a group made from a literal proxy_pass address:
	// one server, default parameters.
	Implicit bool
	// Servers are the server directives in order.
	Servers []UpstreamServer
	// Method is the balancing method: "" (weighted round robin),
	// "least_conn", "hash", "random" or "least_time"; MethodPos where it
	// was set.
	Method    string
	MethodPos Pos
	// HashKey is hash's key as written (may hold variables), Hash the
	// same compiled (its variables are key variables, isKeyVariable);
	// Consistent is set by hash ... consistent (ketama).
	HashKey    string
	Hash       *Template
	Consistent bool
	// RandomTwo is random two: pick two servers, keep the one with fewer
	// connections (least_conn is the only method OSS NGINX offers).
	RandomTwo bool
	// LeastTime is least_time's measure: "connect", "first_byte" or
	// "last_byte"; LeastTimeInflight adds inflight.
	LeastTime         string
	LeastTimeInflight bool
	// Zone and ZoneSize are the zone directive (ZoneSize 0: size not
	// given). tlsrelay shares state between event loops anyway; a zone
	// only matters for resolve.
	Zone     string
	ZoneSize int64
	// Resolver and ResolverTimeout are the block's own resolver
	// settings (nil / 0: the stream level's).
	Resolver        *Resolver
	ResolverTimeout time.Duration
}

// UpstreamServer is one server directive of an upstream block.
type UpstreamServer struct {
	Pos Pos
	// Addr is the address as written ("host:port", "[v6]:port",
	// "unix:/path").
	Addr string
	// Host is the host part (name or IP literal without brackets), or the
	// socket path for unix:. Port is 0 for unix sockets and service=.
	Host string
	Port int
	// Unix is set for unix:/path.
	Unix bool
	// Weight (1), MaxFails (1), FailTimeout (10s), MaxConns (0 = none).
	Weight      int
	MaxFails    int
	FailTimeout time.Duration
	MaxConns    int
	// Backup and Down are the flags of the same name.
	Backup, Down bool
	// Resolve re-resolves Host at run time; Service is service=name (SRV).
	Resolve bool
	Service string
}

// LogFormat is a log_format.
type LogFormat struct {
	Name string
	// Escape is "default", "json" or "none".
	Escape string
	// Format is the concatenation of the format strings, variables kept
	// as text; Template the same compiled.
	Format   string
	Template *Template
	Pos      Pos
	// Builtin marks BuiltinLogFormat (not printed by -T).
	Builtin bool
}

// AccessLog is one access_log directive.
type AccessLog struct {
	Pos Pos
	// Off is access_log off (no other field is set).
	Off bool
	// Path is the file (absolute; relative paths are taken from the
	// prefix), or "syslog:..." as written; may hold variables, then
	// PathTemplate is it compiled (nil without variables): the file is
	// opened for each line, as NGINX does without open_log_file_cache.
	Path         string
	PathTemplate *Template
	// Format names a LogFormat.
	Format string
	// Buffer is buffer= in bytes; 0: unbuffered (64k when gzip is set
	// without buffer, as NGINX).
	Buffer int64
	// Gzip is the gzip level 1-9; 0: no compression.
	Gzip int
	// Flush is flush=; 0: none.
	Flush time.Duration
	// If is if=condition (a variable); "": always. IfTemplate is If
	// compiled (nil with no condition).
	If         string
	IfTemplate *Template
}
