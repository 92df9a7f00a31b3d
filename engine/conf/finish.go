package conf

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"

	"github.com/tlsrelay/tlsrelay/internal/pemhint"
	"github.com/tlsrelay/tlsrelay/internal/safefile"
)

// finish runs the checks NGINX makes once the whole configuration is read:
// inheritance, proxy_pass targets, zones, TLS files; and the directive
// table's checks: those of main and events directives first, the others'
// once servers have inherited their values.
func (p *parser) finish() error {
	m := &p.cfg.Main
	if err := p.runChecks(true); err != nil {
		return err
	}
	st := p.cfg.Stream
	if st == nil {
		return nil
	}
	for _, name := range sortedKeys(p.zoneSizes) {
		if p.zoneSizes[name] == 0 {
			return Errorf(p.zoneUsers[name], "zero size shared memory zone %q", name)
		}
	}
	eff := p.effective(p.streamLvl)
	st.Proxy, st.Core, st.AccessLogs, st.ErrorLogs = eff.Proxy, eff.Core, eff.AccessLogs, eff.ErrorLogs
	for _, u := range st.Upstreams {
		if err := p.checkResolve(u, st.Core.Resolver); err != nil {
			return err
		}
	}
	for _, ss := range p.servers {
		srv := ss.srv
		eff := p.effective(p.streamLvl, ss.lvl)
		srv.Proxy, srv.Core = eff.Proxy, eff.Core
		srv.AccessLogs = eff.AccessLogs
		for _, l := range eff.AccessLogs {
			if l.Off {
				srv.AccessLogs = nil
			}
		}
		srv.Access = ss.lvl.access
		if len(srv.Access) == 0 {
			srv.Access = p.streamLvl.access
		}
		srv.RealIPFrom = ss.lvl.realIP
		if len(srv.RealIPFrom) == 0 {
			srv.RealIPFrom = p.streamLvl.realIP
		}
		srv.LimitConn = ss.lvl.limits
		if len(srv.LimitConn) == 0 {
			srv.LimitConn = p.streamLvl.limits
		}
		for _, l := range srv.LimitConn {
			if st.LimitConnZones[l.Zone] == nil {
				return Errorf(l.Pos, "unknown limit_conn_zone %q", l.Zone)
			}
		}
		srv.ErrorLogs = eff.ErrorLogs
		if len(srv.ErrorLogs) == 0 {
			srv.ErrorLogs = append([]ErrorLog(nil), m.ErrorLog...)
		}
		if srv.ProxyPass == "" {
			// NGINX names the line of "server {" (ngx_stream_core_server
			// records it before reading the block), not of its "}".
			return Errorf(srv.Pos, "no handler for server")
		}
		if err := p.target(srv); err != nil {
			return err
		}
		if srv.Proxy.SSL.Enabled {
			if err := p.checkSSL(&srv.Proxy.SSL); err != nil {
				return err
			}
		}
	}
	return p.runChecks(false)
}

// runChecks runs the checks of the directive table's rows in table order:
// those of main and events directives (main), or all the others.
func (p *parser) runChecks(main bool) error {
	for i := range p.ix.table {
		r := &p.ix.table[i]
		if r.check == nil || (r.ctx.innermost() <= ctxEvents) != main {
			continue
		}
		if err := r.check(p); err != nil {
			return err
		}
	}
	return nil
}

// effective applies the directives of the given levels (outermost first)
// to the defaults: for each directive the innermost level that has it wins.
func (p *parser) effective(levels ...*level) mergeable {
	m := p.ix.defaultLevel()
	p.replay = true
	defer func() { p.replay = false }()
	names := map[string]bool{}
	for _, l := range levels {
		for n := range l.set {
			names[n] = true
		}
	}
	for _, name := range sortedKeys(names) {
		var ds []*directive
		for i := len(levels) - 1; i >= 0 && len(ds) == 0; i-- {
			ds = levels[i].set[name]
		}
		r := p.ix.mergeRow(name)
		if r.reset != nil {
			r.reset(&m)
		}
		for _, d := range ds {
			// Validated when first applied; cannot fail now.
			_ = r.merge(p, &m, d)
			m.setPos(r.pos, name, d.pos)
		}
	}
	return m
}

// target resolves a server's proxy_pass: an upstream block by name, or an
// implicit group for a literal address (shared by every server that names
// the same address, as in NGINX).
func (p *parser) target(srv *Server) error {
	if srv.ProxyPassVariables() {
		return nil
	}
	st := p.cfg.Stream
	v := srv.ProxyPass
	a, _ := ParseUpstreamAddr(v) // proxyPass checked it
	host, port, unix := a.Host, a.Port, a.Unix
	if !unix {
		for _, u := range st.Upstreams {
			if u.Implicit || !strings.EqualFold(u.Name, host) {
				continue
			}
			if port != 0 {
				return Errorf(srv.ProxyPassPos, "upstream %q may not have port %d", u.Name, port)
			}
			srv.Upstream = u
			return nil
		}
		if port == 0 {
			return Errorf(srv.ProxyPassPos, "no port in upstream %q", v)
		}
	}
	for _, u := range st.Upstreams {
		if u.Implicit && u.Name == v {
			srv.Upstream = u
			return nil
		}
	}
	u := &Upstream{Name: v, Pos: srv.ProxyPassPos, Implicit: true, Servers: []UpstreamServer{{
		Pos: srv.ProxyPassPos, Addr: v, Host: host, Port: port, Unix: unix,
		Weight: 1, MaxFails: 1, FailTimeout: 10e9,
	}}}
	st.Upstreams = append(st.Upstreams, u)
	srv.Upstream = u
	return nil
}

// checkResolve: servers with resolve need a zone and a resolver.
func (p *parser) checkResolve(u *Upstream, streamResolver *Resolver) error {
	for _, s := range u.Servers {
		if !s.Resolve {
			continue
		}
		if u.Zone == "" {
			return Errorf(s.Pos, "resolving names at run time requires upstream %q to be in shared memory", u.Name)
		}
		if u.Resolver == nil && streamResolver == nil {
			return Errorf(s.Pos, "no resolver defined to resolve names at run time in upstream %q", u.Name)
		}
	}
	return nil
}

// checkSSL makes NGINX's ngx_stream_proxy_set_ssl checks for a server with
// proxy_ssl on, and reads the certificate, key, CA and CRL files with the
// standard library so a missing or broken file is reported at the directive
// that names it.
func (p *parser) checkSSL(s *SSL) error {
	once := func(_, _ string, f func() error) error { return f() }
	if s.Certificate != "" {
		pos := s.Pos["proxy_ssl_certificate"]
		if s.CertificateKey == "" {
			return Errorf(pos, "no \"proxy_ssl_certificate_key\" is defined for certificate %q", s.Certificate)
		}
		if !hasVariables(s.Certificate) && !hasVariables(s.CertificateKey) {
			var certPEM []byte
			err := once("cert", s.Certificate, func() error {
				var err error
				certPEM, err = readCertificates(s.Certificate, "CERTIFICATE")
				if err != nil {
					return Errorf(pos, "cannot load certificate %q: %w", s.Certificate, err)
				}
				return nil
			})
			if err != nil {
				return err
			}
			kpos := s.Pos["proxy_ssl_certificate_key"]
			if err := once("key", s.Certificate+"\x00"+s.CertificateKey+"\x00"+s.PasswordFile, func() error {
				if err := p.checkKey(s, certPEM); err != nil {
					return Errorf(kpos, "cannot load certificate key %q: %w", s.CertificateKey, err)
				}
				return nil
			}); err != nil {
				return err
			}
		}
	}
	if !s.Verify {
		return nil
	}
	if s.TrustedCertificate == "" {
		return Errorf(s.Pos["proxy_ssl_verify"], "no proxy_ssl_trusted_certificate for proxy_ssl_verify")
	}
	tpos := s.Pos["proxy_ssl_trusted_certificate"]
	if err := once("ca", s.TrustedCertificate, func() error {
		if _, err := readCertificates(s.TrustedCertificate, "CERTIFICATE"); err != nil {
			return Errorf(tpos, "cannot load trusted certificate %q: %w", s.TrustedCertificate, err)
		}
		return nil
	}); err != nil {
		return err
	}
	if s.CRL != "" {
		cpos := s.Pos["proxy_ssl_crl"]
		if err := once("crl", s.CRL, func() error {
			if _, err := readCertificates(s.CRL, "X509 CRL"); err != nil {
				return Errorf(cpos, "cannot load CRL %q: %w", s.CRL, err)
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}

// readFile reads a TLS file (certificate, key, CA, CRL, password file)
// through safefile, with the path left out of the error (the caller's
// message names the file already): a regular file of at most
// safefile.MaxPEM bytes.
func readFile(path string) ([]byte, error) {
	data, _, err := readFileStat(path)
	return data, err
}

// readFileStat is readFile that also returns the file's mode.
func readFileStat(path string) ([]byte, fs.FileMode, error) {
	data, fi, err := safefile.ReadStat(path, safefile.MaxPEM)
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return nil, 0, pe.Err
	}
	if err != nil {
		return nil, 0, err
	}
	return data, fi.Mode(), nil
}

// warnTooOpen warns, once per file and position, that a secret file
// (private key, password file) is accessible by its group or others.
// OpenSSH refuses such a key; NGINX reads it silently. tlsrelay loads it,
// so that configurations that work today keep working, and says so.
func (p *parser) warnTooOpen(pos Pos, directive, path string, mode fs.FileMode) {
	if !safefile.TooOpen(mode) {
		return
	}
	w := Warning{Pos: pos, Msg: fmt.Sprintf("permissions %04o for the %q file %q are too open: group or others "+
		"can access it (chmod 600 it)", mode.Perm(), directive, path)}
	for _, have := range p.warnings {
		if have == w {
			return
		}
	}
	p.warnings = append(p.warnings, w)
}

func hasVariables(s string) bool { return strings.Contains(s, "$") }

// errNoPEM says a file has no PEM block of the expected type.
var errNoPEM = errors.New("no PEM data found")

// readCertificates reads a PEM file and parses every block of the given
// type ("CERTIFICATE" or "X509 CRL"); at least one must be there. It
// returns the file's contents.
func readCertificates(path, typ string) ([]byte, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	n := 0
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != typ {
			continue
		}
		n++
		if typ == "CERTIFICATE" {
			if _, err := x509.ParseCertificate(b.Bytes); err != nil {
				return nil, fmt.Errorf("certificate %d: %w", n, err)
			}
		} else if _, err := x509.ParseRevocationList(b.Bytes); err != nil {
			return nil, fmt.Errorf("CRL %d: %w", n, err)
		}
	}
	if n == 0 {
		kind := pemhint.Certificate
		if typ == "X509 CRL" {
			kind = pemhint.CRL
		}
		return nil, fmt.Errorf("%w (want %q blocks)%s", errNoPEM, typ, pemhint.DER(data, path, kind))
	}
	return data, nil
}

// checkKey reads the key file: it must hold a PEM private key. An
// encrypted key needs proxy_ssl_password_file (which must be readable) and
// is left to the engine to decrypt; a clear key must match the
// certificate.
func (p *parser) checkKey(s *SSL, certPEM []byte) error {
	if strings.HasPrefix(s.CertificateKey, "engine:") || strings.HasPrefix(s.CertificateKey, "store:") {
		return errors.New("engine: and store: keys are not supported")
	}
	data, mode, err := readFileStat(s.CertificateKey)
	if err != nil {
		return err
	}
	p.warnTooOpen(s.Pos["proxy_ssl_certificate_key"], "proxy_ssl_certificate_key", s.CertificateKey, mode)
	var key *pem.Block
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if strings.HasSuffix(b.Type, "PRIVATE KEY") {
			key = b
			break
		}
	}
	if key == nil {
		return fmt.Errorf("%w (want a PRIVATE KEY block)%s", errNoPEM, pemhint.DER(data, s.CertificateKey, pemhint.Key))
	}
	if key.Type == "ENCRYPTED PRIVATE KEY" || key.Headers["Proc-Type"] == "4,ENCRYPTED" {
		if s.PasswordFile == "" {
			return errors.New("the key is encrypted and no proxy_ssl_password_file is set")
		}
		_, mode, err := readFileStat(s.PasswordFile)
		if err != nil {
			return fmt.Errorf("reading proxy_ssl_password_file: %w", err)
		}
		p.warnTooOpen(s.Pos["proxy_ssl_password_file"], "proxy_ssl_password_file", s.PasswordFile, mode)
		return nil
	}
	if _, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(key)); err != nil {
		return err
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
