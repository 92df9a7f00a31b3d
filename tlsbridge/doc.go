// Package tlsbridge holds everything tlsrelay knows about the upstream TLS
// leg: the policy of one server{} block (the proxy_ssl_* directives), the
// shared session-ticket store, and the record driver that lets an event loop
// own a *tls.Conn.
//
// # Policy
//
// A [PolicyConfig] is the configuration of one server{} block as written;
// [NewPolicy] loads its files (client certificate and key, password file,
// trusted certificates, CRLs), parses the OpenSSL cipher string
// ([ParseCipherString]), the protocol list and the proxy_ssl_conf_command
// directives, and returns a [*Policy] whose settings never change. Every
// method of Policy may be called from any goroutine.
//
// NewPolicy's errors are [*ConfigError] values naming the directive at
// fault; [Policy.Warnings] lists what `tlsrelay -t` should warn about, and
// [Policy.Ciphers] what the cipher string selects (its Missing suites are
// what `tlsrelay -T` lists).
//
// [Policy.ClientConfig] returns the *tls.Config to dial one [Target] with. It
// always sets InsecureSkipVerify and, when proxy_ssl_verify is on, does its
// own checks in VerifyConnection (chain to a self-signed root of the trusted
// file, OpenSSL ≥1.1 depth semantics, CRLs as NGINX's CRL_CHECK_ALL, the
// verify name against DNS or IP SANs). crypto/tls runs VerifyConnection on
// resumed handshakes too, so a resumed session is held to the same policy as a
// full one.
//
// Every failure has its own error: [*VerifyError] for certificate checks and
// [Classify] for anything a handshake returns, so logs name the reason and
// metrics can count by [Reason].
//
// # Sessions
//
// One [SessionStore] is shared by all event loops. It is keyed by upstream
// endpoint, policy fingerprint ([Policy.Fingerprint]) and the evaluated
// name, never by crypto/tls's default key (the server name), so N backends do
// not share one slot and a server{} block never resumes a session that
// another block's policy verified. After each handshake the dialer calls
// [Policy.Observe], which counts full, resumed and refused handshakes per
// endpoint, drops refused tickets and says whether to retry once with a full
// handshake ([Policy.ConfigWithoutResumption]). SessionStore methods are
// safe for concurrent use too.
//
// # Rotation and key log
//
// The policy's file-backed material (client certificate, key and password
// file, trusted certificates, CRLs) sits behind an atomic pointer.
// [Policy.Reload] re-reads and fully checks the files and swaps the material
// only when everything loads and some content changed; [Policy.Watch] polls
// the files (proxy_ssl_watch) and calls it. New handshakes use the new
// material, established connections keep theirs, and the fingerprint follows
// the certificate and trust, so sessions are never resumed across a change.
//
// proxy_ssl_key_log sets tls.Config.KeyLogWriter to a file of a
// [KeyLogFiles] set, shared by every policy that names the same path.
//
// Where tlsrelay deliberately differs from NGINX, docs/tls.md says so and why.
package tlsbridge
