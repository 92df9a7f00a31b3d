package tlsbridge

import (
	"crypto/sha256"
	"crypto/tls"

	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tlsrelay/tlsrelay/engine/conf"
)

// ConfCommand is one proxy_ssl_conf_command directive: an OpenSSL
// SSL_CONF_cmd name and its value.
type ConfCommand struct {
	Name, Value string
}

// PolicyConfig is the upstream TLS policy of one server{} block as
// configured: plain data, filled by the engine from engine/conf. The zero
// value is NGINX's defaults except VerifyDepth, which the engine passes
// explicitly (NGINX's default is 1), and Ciphers, whose default is
// tlsrelay's DefaultCiphers rather than OpenSSL's "DEFAULT".
type PolicyConfig struct {
	// Certificate, CertificateKey and PasswordFile are file paths
	// (proxy_ssl_certificate, _certificate_key, _password_file); "" = none.
	Certificate, CertificateKey, PasswordFile string
	// Protocols lists "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"; nil means
	// NGINX's default "TLSv1.2 TLSv1.3". "SSLv2" and "SSLv3" are refused.
	Protocols []string
	// Ciphers is an OpenSSL cipher string for TLS 1.2 and older; "" means
	// DefaultCiphers (tlsrelay's default, not OpenSSL's "DEFAULT").
	Ciphers string
	// Name is proxy_ssl_name as written; it may contain $remote_addr,
	// $server_addr and $server_port. "" means the host of each target.
	Name string
	// ServerName is proxy_ssl_server_name: send SNI (never for IP literals).
	ServerName bool
	// Verify is proxy_ssl_verify.
	Verify bool
	// VerifyDepth is proxy_ssl_verify_depth: the number of intermediate CA
	// certificates allowed between the upstream's certificate and the
	// self-signed trust anchor.
	VerifyDepth int
	// TrustedCertificate and CRL are file paths (proxy_ssl_trusted_certificate,
	// proxy_ssl_crl); both are loaded only when Verify is on, as in NGINX.
	TrustedCertificate, CRL string
	// SessionReuse is proxy_ssl_session_reuse.
	SessionReuse bool
	// ConfCommands are the proxy_ssl_conf_command directives, in order.
	ConfCommands []ConfCommand
	// ALPN is the proxy_ssl_alpn list offered to the upstream.
	ALPN []string
	// Identities is proxy_ssl_verify_identity (tlsrelay's own): with
	// Verify, the upstream certificate must carry one of them (see
	// conf.ParseIdentity), and Name is not checked against it.
	Identities []string
	// KeyLog is proxy_ssl_key_log: the file the TLS secrets of every
	// upstream handshake are appended to (NSS key log format, through
	// tls.Config.KeyLogWriter). "" = none. It needs KeyLogFiles.
	KeyLog string
	// KeyLogFiles opens KeyLog, sharing one descriptor among the policies
	// that name the same file. Required when KeyLog is set; ignored
	// otherwise. It is not part of the policy's configuration proper and
	// is not copied (Config returns the same pointer).
	KeyLogFiles *KeyLogFiles
}

// Target is one upstream endpoint as the dialer sees it.
type Target struct {
	// Addr is the "ip:port" dialed, or "unix:/path" for a unix domain
	// socket.
	Addr string
	// Host is the host as written in the upstream server line or in
	// proxy_pass, e.g. "backend1.example.com" or "127.0.0.1". "" means the
	// host part of Addr.
	Host string
}

// Vars are the per-connection values of the variables proxy_ssl_name may
// use.
type Vars struct {
	RemoteAddr, ServerAddr, ServerPort string
}

// Policy is the loaded upstream TLS policy of one server{} block. It is
// safe for concurrent use: every method may be called from any goroutine.
// Its settings are fixed by NewPolicy; its file-backed material (client
// certificate and key, trusted certificates, CRLs) may be replaced as a
// whole by Reload (see rotate.go), which new handshakes then use.
type Policy struct {
	pc      PolicyConfig
	name    nameTemplate
	minVer  uint16
	maxVer  uint16
	ciphers CipherList
	suites  []uint16 // Config.CipherSuites; nil when only TLS 1.3 is on
	curves  []tls.CurveID
	alpn    []string
	// identities are proxy_ssl_verify_identity's, parsed.
	identities []conf.Identity
	store      *SessionStore // nil when session reuse is off
	sessions   *SessionStore // the store given to NewPolicy, for counts; may be nil
	keyLog     io.Writer     // nil without proxy_ssl_key_log
	warnings   []string

	// mat is the current material, never nil after NewPolicy; Reload
	// stores a new one (serialised by reloadMu).
	mat      atomic.Pointer[material]
	reloadMu sync.Mutex
	// trust is the trust store NewPolicy loaded (nil unless Verify): the
	// first material's, shared with it, so tests can set its clock. The
	// handshakes use mat's.
	trust *trustStore
}

// material is the file-backed part of a policy and what depends on it:
// the client certificate, the trust store, the fingerprint that keys the
// session store, and the tls.Configs built from them. A material is never
// modified once stored in Policy.mat (its config cache aside); Reload
// replaces it whole, so a handshake sees one consistent generation.
type material struct {
	cert  *tls.Certificate // nil: no client certificate
	trust *trustStore      // nil unless Verify
	fp    string
	// files are the files read to build it, in reading order, with their
	// content hashes: equal lists mean equal material.
	files []fileState
	// stats are the watched files' states taken just before reading them.
	stats []fileStat

	mu      sync.RWMutex
	configs map[configKey]*tls.Config // guarded by mu
}

// configKey names one cached *tls.Config.
type configKey struct {
	target Target
	name   string // evaluated proxy_ssl_name; "" when Name has no variables
	resume bool
}

// maxCachedConfigs bounds the per-policy config cache when proxy_ssl_name
// has variables (one config per distinct evaluated name); past it the cache
// starts over.
const maxCachedConfigs = 4096

// NewPolicy loads and checks the files and settings of pc. store is the
// shared session store; it may be nil, which turns session reuse off. Errors
// name the file or setting and the reason; the engine prefixes the
// directive's file:line.
func NewPolicy(pc PolicyConfig, store *SessionStore) (*Policy, error) {
	p := &Policy{pc: pc}
	pc.Protocols = append([]string(nil), pc.Protocols...)
	pc.ConfCommands = append([]ConfCommand(nil), pc.ConfCommands...)
	pc.ALPN = append([]string(nil), pc.ALPN...)
	p.pc = pc

	var err error
	if p.name, err = parseNameTemplate(pc.Name); err != nil {
		return nil, configError("proxy_ssl_name", err)
	}
	enabled, err := parseProtocols(pc.Protocols)
	if err != nil {
		return nil, configError("proxy_ssl_protocols", err)
	}
	cipherString := pc.Ciphers
	if cipherString == "" {
		cipherString = DefaultCiphers
	}
	cc, err := applyConfCommands(pc.ConfCommands, cipherString)
	if err != nil {
		return nil, configError("proxy_ssl_conf_command", err)
	}
	p.warnings = append(p.warnings, cc.warnings...)
	p.curves = cc.curves
	// Certificate and PrivateKey replace the client certificate's files,
	// as OpenSSL applies them after proxy_ssl_certificate.
	if cc.certificate != "" {
		pc.Certificate, p.pc.Certificate = cc.certificate, cc.certificate
	}
	if cc.privateKey != "" {
		pc.CertificateKey, p.pc.CertificateKey = cc.privateKey, cc.privateKey
	}
	if p.minVer, p.maxVer, err = protocolSpan(enabled, cc.minProto, cc.maxProto, &p.warnings); err != nil {
		return nil, configError("proxy_ssl_protocols", err)
	}
	// The cipher string is the user's: proxy_ssl_ciphers as written (the
	// engine passes the configuration's value; the default, DefaultCiphers,
	// selects nothing to warn about) or a CipherString conf command, which
	// the warnings then name.
	cipherDirective := "proxy_ssl_ciphers"
	if cc.cipherString != cipherString {
		cipherDirective = "proxy_ssl_conf_command CipherString"
	}
	if p.ciphers, err = ParseCipherString(cc.cipherString); err != nil {
		return nil, configError("proxy_ssl_ciphers", fmt.Errorf("proxy_ssl_ciphers %q: %w", cc.cipherString, err))
	}
	if p.ciphers.SuiteB {
		p.warnings = append(p.warnings, cipherDirective+": Suite B selects its cipher suites only; groups and signature algorithms are not restricted as in OpenSSL (use proxy_ssl_conf_command Groups)")
	}
	if len(p.ciphers.Missing) > 0 {
		p.warnings = append(p.warnings, fmt.Sprintf("%s selects %d suites crypto/tls does not implement, which are not offered (%s); `tlsrelay -T` lists them",
			cipherDirective, len(p.ciphers.Missing), SummarizeSuites(p.ciphers.Missing)))
	}
	if p.minVer <= tls.VersionTLS12 {
		if len(p.ciphers.Go) == 0 {
			return nil, configError("proxy_ssl_ciphers", fmt.Errorf("proxy_ssl_ciphers %q selects no cipher suite crypto/tls implements, and TLS 1.2 or older is enabled (OpenSSL would offer: %s)",
				cc.cipherString, strings.Join(p.ciphers.OpenSSL, ":")))
		}
		p.suites = p.ciphers.Go
		if ins := insecureNames(p.suites); len(ins) > 0 {
			p.warnings = append(p.warnings, fmt.Sprintf("%s enables suites crypto/tls lists as insecure: %s", cipherDirective, strings.Join(ins, ":")))
		}
		if p.minVer < tls.VersionTLS12 && !hasPreTLS12Suite(p.suites) {
			var old []string
			for _, name := range []string{"TLSv1", "TLSv1.1"} {
				if protocolNames[name] >= p.minVer {
					old = append(old, name)
				}
			}
			p.warnings = append(p.warnings, fmt.Sprintf("proxy_ssl_protocols enables %s, but the cipher string %q selects only TLS 1.2 suites, "+
				"so %s cannot be negotiated (add e.g. ECDHE+AES+SHA1 to proxy_ssl_ciphers)", strings.Join(old, " "), cc.cipherString, strings.Join(old, " and ")))
		}
	}
	for _, a := range pc.ALPN {
		if a == "" || len(a) > 255 {
			p.warnings = append(p.warnings, fmt.Sprintf("proxy_ssl_alpn: protocol %q skipped (must be 1 to 255 bytes)", a))
			continue
		}
		p.alpn = append(p.alpn, a)
	}

	if pc.Certificate != "" || pc.CertificateKey != "" {
		if pc.Certificate == "" {
			return nil, configError("proxy_ssl_certificate_key", errors.New("proxy_ssl_certificate_key is set without proxy_ssl_certificate"))
		}
		if pc.CertificateKey == "" {
			return nil, configError("proxy_ssl_certificate", fmt.Errorf("no proxy_ssl_certificate_key for proxy_ssl_certificate %q", pc.Certificate))
		}
	}

	for _, s := range pc.Identities {
		id, err := conf.ParseIdentity(s)
		if err != nil {
			return nil, configError("proxy_ssl_verify_identity", fmt.Errorf("proxy_ssl_verify_identity: %w", err))
		}
		p.identities = append(p.identities, id)
	}
	if len(p.identities) > 0 && !pc.Verify {
		return nil, configError("proxy_ssl_verify_identity", errors.New("proxy_ssl_verify_identity needs proxy_ssl_verify on: an identity is worth nothing in a certificate whose chain is not checked"))
	}
	if pc.Verify {
		if pc.TrustedCertificate == "" {
			return nil, configError("proxy_ssl_verify", errors.New("no proxy_ssl_trusted_certificate for proxy_ssl_verify"))
		}
		if pc.VerifyDepth < 0 {
			return nil, configError("proxy_ssl_verify_depth", fmt.Errorf("proxy_ssl_verify_depth %d is negative", pc.VerifyDepth))
		}
	} else {
		p.warnings = append(p.warnings, "proxy_ssl_verify is off: the upstream certificate is not checked")
	}
	m, err := p.loadMaterial()
	if err != nil {
		return nil, err
	}
	p.trust = m.trust
	p.mat.Store(m)
	p.warnings = append(p.warnings, materialWarnings(pc, m)...)

	if pc.KeyLog != "" {
		if pc.KeyLogFiles == nil {
			return nil, configError("proxy_ssl_key_log", fmt.Errorf("proxy_ssl_key_log %q: no KeyLogFiles set to open it with", pc.KeyLog))
		}
		if p.keyLog, err = pc.KeyLogFiles.Open(pc.KeyLog); err != nil {
			return nil, configError("proxy_ssl_key_log", err)
		}
	}
	p.sessions = store
	if pc.SessionReuse {
		p.store = store
	}
	return p, nil
}

// loadMaterial reads and checks the policy's files (client certificate,
// key and password file; with Verify the trusted certificates and CRL),
// exactly as NewPolicy does, and returns them as a new material with its
// fingerprint. It has no effect on p.
func (p *Policy) loadMaterial() (*material, error) {
	m := &material{configs: make(map[configKey]*tls.Config), stats: statFiles(p.watchedFiles())}
	r := &fileReader{}
	var err error
	if p.pc.Certificate != "" {
		if m.cert, err = loadClientCertificateWith(r.reader, p.pc.Certificate, p.pc.CertificateKey, p.pc.PasswordFile); err != nil {
			return nil, err
		}
	}
	if p.pc.Verify {
		if m.trust, err = loadTrustWith(r.reader, p.pc.TrustedCertificate, p.pc.CRL); err != nil {
			return nil, err
		}
	}
	m.files = r.files
	m.fp = p.computeFingerprint(m)
	return m, nil
}

// ConfigError is an error of NewPolicy, with the directive it concerns so
// that the engine can point at its file:line.
type ConfigError struct {
	Directive string // e.g. "proxy_ssl_ciphers"
	Err       error
}

// Error returns the message; the directive is named in it already.
func (e *ConfigError) Error() string { return e.Err.Error() }

// Unwrap returns the underlying error.
func (e *ConfigError) Unwrap() error { return e.Err }

func configError(directive string, err error) error {
	return &ConfigError{Directive: directive, Err: err}
}

// Warnings returns what `tlsrelay -t` should print about this policy:
// insecure settings it accepts (verification off, TLSv1/TLSv1.1, insecure
// suites), protocol versions it cannot honour, and the suites the cipher
// string selects that crypto/tls does not implement.
func (p *Policy) Warnings() []string {
	return append([]string(nil), p.warnings...)
}

// Config returns a copy of the configuration the policy was built from.
func (p *Policy) Config() PolicyConfig {
	pc := p.pc
	pc.Protocols = append([]string(nil), pc.Protocols...)
	pc.ConfCommands = append([]ConfCommand(nil), pc.ConfCommands...)
	pc.ALPN = append([]string(nil), pc.ALPN...)
	pc.Identities = append([]string(nil), pc.Identities...)
	return pc
}

// Ciphers returns the evaluated proxy_ssl_ciphers string.
func (p *Policy) Ciphers() CipherList {
	return p.ciphers
}

// Fingerprint returns a hash of everything that decides what a resumed
// session may be trusted for: the name template and SNI setting, the trust
// roots, verify depth and CRLs, the client certificate, protocol versions,
// cipher suites, groups and ALPN. Two policies with equal fingerprints may
// share sessions. It changes when Reload loads a different client
// certificate or trust material, so sessions made under the old material
// are not resumed under the new.
func (p *Policy) Fingerprint() string {
	return p.mat.Load().fp
}

// computeFingerprint hashes p's settings with the material m.
func (p *Policy) computeFingerprint(m *material) string {
	h := sha256.New()
	field := func(tag string, b []byte) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write([]byte(tag))
		h.Write(n[:])
		h.Write(b)
	}
	field("name", []byte(p.pc.Name))
	for _, id := range p.identities {
		field("identity", []byte(id.String()))
	}
	field("sni", []byte(strconv.FormatBool(p.pc.ServerName)))
	field("verify", []byte(strconv.FormatBool(p.pc.Verify)))
	if m.trust != nil {
		field("depth", []byte(strconv.Itoa(p.pc.VerifyDepth)))
		field("trust", m.trust.digest[:])
	}
	if m.cert != nil {
		for _, der := range m.cert.Certificate {
			field("cert", der)
		}
	}
	field("versions", []byte{byte(p.minVer >> 8), byte(p.minVer), byte(p.maxVer >> 8), byte(p.maxVer)})
	for _, s := range p.suites {
		field("suite", []byte{byte(s >> 8), byte(s)})
	}
	for _, c := range p.curves {
		field("curve", []byte{byte(c >> 8), byte(c)})
	}
	for _, a := range p.alpn {
		field("alpn", []byte(a))
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// ClientConfig returns the *tls.Config to dial target t with, for a
// connection whose variables are v. Without variables in proxy_ssl_name the
// config is built once per target and cached, so the call is cheap and does
// not allocate; with variables there is one per distinct evaluated name.
// The result is shared: callers must not modify it. It holds the material
// current at the call; after a Reload, later calls return new configs.
func (p *Policy) ClientConfig(t Target, v Vars) (*tls.Config, error) {
	return p.clientConfig(t, v, p.store != nil)
}

// ConfigWithoutResumption is ClientConfig without a session cache: the
// config for the one retry with a full handshake after a handshake that
// offered a ticket failed (see Observe).
func (p *Policy) ConfigWithoutResumption(t Target, v Vars) (*tls.Config, error) {
	return p.clientConfig(t, v, false)
}

func (p *Policy) clientConfig(t Target, v Vars, resume bool) (*tls.Config, error) {
	k := configKey{target: t, resume: resume}
	if p.name.hasVars {
		k.name = p.name.eval(v)
	}
	m := p.mat.Load()
	m.mu.RLock()
	cfg := m.configs[k]
	m.mu.RUnlock()
	if cfg != nil {
		return cfg, nil
	}
	cfg, err := p.buildConfig(m, t, k.name, resume)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	if old := m.configs[k]; old != nil {
		cfg = old
	} else {
		if len(m.configs) >= maxCachedConfigs {
			clear(m.configs)
		}
		m.configs[k] = cfg
	}
	m.mu.Unlock()
	return cfg, nil
}

// Observe records the outcome of one handshake to t made with the config
// ClientConfig(t, v) returned: cs is the connection state after the
// handshake (ignored when err is not nil), err the handshake's error. It
// counts full, resumed and refused handshakes per endpoint, drops a ticket
// the upstream refused, and returns true when the handshake failed after
// offering a ticket and is worth one retry with a full handshake (use
// ConfigWithoutResumption for it). Call it once per handshake, from any
// goroutine; without session reuse it only counts.
//
// Tickets handed to concurrent handshakes to the same key are matched to
// outcomes in order; when handshakes overlap, a refusal may drop a sibling
// ticket instead of the refused one. That costs at most one extra full
// handshake, and counts stay exact. A handshake that started before a
// Reload is observed against the new material's key: its ticket
// bookkeeping (not its counts) is lost, at worst one retry not made.
func (p *Policy) Observe(t Target, v Vars, cs tls.ConnectionState, err error) (retryFull bool) {
	if p.store == nil {
		if p.sessions != nil {
			p.sessions.count(t.Addr, err == nil && cs.DidResume, err)
		}
		return false
	}
	cfg, cerr := p.ClientConfig(t, v)
	if cerr != nil {
		return false
	}
	view, ok := cfg.ClientSessionCache.(*sessionView)
	if !ok {
		return false
	}
	return view.slot.observe(err == nil && cs.DidResume, err)
}

// names returns the verify name and the SNI value for target t; evaluated
// is the evaluated proxy_ssl_name when it has variables.
func (p *Policy) names(t Target, evaluated string) (verifyName, sni string) {
	raw := evaluated
	if !p.name.hasVars {
		raw = p.name.text
	}
	if raw == "" {
		raw = t.Host
		if raw == "" {
			if strings.HasPrefix(t.Addr, "unix:") {
				// A unix domain socket has no host name: no SNI, and
				// verification needs proxy_ssl_name.
				return "", ""
			}
			raw = t.Addr
		}
	}
	verifyName = stripPort(raw)
	if p.pc.ServerName && sniAllowed(verifyName) {
		sni = verifyName
	}
	return strings.Trim(verifyName, "[]"), sni
}

// stripPort removes a trailing ":port" as NGINX does for proxy_ssl_name,
// keeping "[v6]" literals and bare IPv6 addresses intact.
func stripPort(s string) string {
	if strings.HasPrefix(s, "[") {
		if i := strings.IndexByte(s, ']'); i >= 0 {
			return s[:i+1]
		}
		return s
	}
	if strings.Count(s, ":") == 1 {
		return s[:strings.IndexByte(s, ':')]
	}
	return s
}

// sniAllowed reports whether name may be sent as SNI: not empty, not an
// IPv4 or IPv6 literal (RFC 6066, section 3).
func sniAllowed(name string) bool {
	if name == "" || strings.HasPrefix(name, "[") {
		return false
	}
	return net.ParseIP(name) == nil
}

func (p *Policy) buildConfig(m *material, t Target, evaluated string, resume bool) (*tls.Config, error) {
	verifyName, sni := p.names(t, evaluated)
	cfg := &tls.Config{
		ServerName:         sni,
		InsecureSkipVerify: true, // our own checks run in VerifyConnection
		MinVersion:         p.minVer,
		MaxVersion:         p.maxVer,
		CipherSuites:       p.suites,
		CurvePreferences:   p.curves,
		NextProtos:         p.alpn,
		KeyLogWriter:       p.keyLog,
	}
	if m.cert != nil {
		cert := m.cert
		// Like OpenSSL, send the configured certificate whatever CAs the
		// upstream says it accepts.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return cert, nil
		}
	}
	if m.trust != nil {
		depth := p.pc.VerifyDepth
		trust := m.trust
		// proxy_ssl_verify_identity replaces the name check.
		name, ids := verifyName, p.identities
		if len(ids) > 0 {
			name = ""
		}
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if err := trust.verify(cs.PeerCertificates, name, depth); err != nil || len(ids) == 0 {
				return err
			}
			return checkIdentities(cs.PeerCertificates[0], ids)
		}
	}
	if resume && p.store != nil {
		cfg.ClientSessionCache = p.store.view(sessionKey(t.Addr, m.fp, verifyName, sni), t.Addr)
	}
	return cfg, nil
}

// sessionKey is the store key of one (endpoint, policy, name) triple.
func sessionKey(addr, fp, verifyName, sni string) string {
	return addr + "\x00" + fp + "\x00" + verifyName + "\x00" + sni
}

// hasPreTLS12Suite reports whether one of ids (TLS ≤1.2 suites) can be
// negotiated below TLS 1.2: AEAD and SHA-256/384 suites are TLS 1.2 only.
func hasPreTLS12Suite(ids []uint16) bool {
	for _, id := range ids {
		for i := range opensslSuites {
			if opensslSuites[i].id == id && opensslSuites[i].minTLS < verTLS12 {
				return true
			}
		}
	}
	return false
}

func insecureNames(ids []uint16) []string {
	insecure := make(map[uint16]bool)
	for _, s := range tls.InsecureCipherSuites() {
		insecure[s.ID] = true
	}
	var out []string
	for _, id := range ids {
		if insecure[id] {
			out = append(out, tls.CipherSuiteName(id))
		}
	}
	sort.Strings(out)
	return out
}

// trustDigest hashes a set of DER blobs in a stable order.
func trustDigest(parts ...[][]byte) [32]byte {
	h := sha256.New()
	for i, set := range parts {
		sorted := append([][]byte(nil), set...)
		sort.Slice(sorted, func(a, b int) bool { return string(sorted[a]) < string(sorted[b]) })
		fmt.Fprintf(h, "set%d:%d;", i, len(sorted))
		for _, der := range sorted {
			sum := sha256.Sum256(der)
			h.Write(sum[:])
		}
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}
