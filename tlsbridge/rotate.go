package tlsbridge

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"strings"
	"time"
)

// Certificate rotation without a signal (proxy_ssl_watch): Reload re-reads
// a policy's files and swaps its material atomically; Watch polls the
// files and calls Reload when they change.

// fileState is one file read to build a material: which directive named
// it, its path and the SHA-256 of what was read.
type fileState struct {
	directive, path string
	sum             [32]byte
}

// fileReader is what the loaders read through when building a material: it
// records each file read, with its content hash, in order.
type fileReader struct {
	files []fileState
}

// reader returns the readFunc for the files of one directive.
func (r *fileReader) reader(directive string) readFunc {
	return func(path string) ([]byte, error) {
		data, err := readFile(path)
		if err != nil {
			return nil, err
		}
		r.files = append(r.files, fileState{directive: directive, path: path, sum: sha256.Sum256(data)})
		return data, nil
	}
}

func sameFiles(a, b []fileState) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// changedFiles lists the files of next that were not read, with the same
// content, for prev, as "directive from PATH".
func changedFiles(prev, next []fileState) []string {
	old := make(map[fileState]bool, len(prev))
	for _, f := range prev {
		old[f] = true
	}
	var out []string
	seen := map[fileState]bool{}
	for _, f := range next {
		if !old[f] && !seen[f] {
			seen[f] = true
			out = append(out, fmt.Sprintf("%s from %q", f.directive, f.path))
		}
	}
	return out
}

// fileStat is what Watch compares between two polls of one file: identity
// (device and inode, through os.SameFile), size and modification time, or
// the stat error.
type fileStat struct {
	path string
	info os.FileInfo // nil when stat failed
	err  string
}

func (a fileStat) same(b fileStat) bool {
	if a.path != b.path || a.err != b.err || (a.info == nil) != (b.info == nil) {
		return false
	}
	if a.info == nil {
		return true
	}
	return os.SameFile(a.info, b.info) && a.info.Size() == b.info.Size() &&
		a.info.ModTime().Equal(b.info.ModTime()) && a.info.Mode() == b.info.Mode()
}

func statFiles(paths []string) []fileStat {
	out := make([]fileStat, len(paths))
	for i, p := range paths {
		out[i].path = p
		if fi, err := os.Stat(p); err != nil {
			out[i].err = err.Error()
		} else {
			out[i].info = fi
		}
	}
	return out
}

func sameStats(a, b []fileStat) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].same(b[i]) {
			return false
		}
	}
	return true
}

// watchedFiles are the files Reload reads: the client certificate, key and
// password file, and with Verify the trusted certificates and the CRL.
// Each path is listed once.
func (p *Policy) watchedFiles() []string {
	var out []string
	add := func(path string) {
		if path == "" {
			return
		}
		for _, have := range out {
			if have == path {
				return
			}
		}
		out = append(out, path)
	}
	if p.pc.Certificate != "" {
		add(p.pc.Certificate)
		add(p.pc.CertificateKey)
		add(p.pc.PasswordFile)
	}
	if p.pc.Verify {
		add(p.pc.TrustedCertificate)
		add(p.pc.CRL)
	}
	return out
}

// WatchedFiles returns the files Reload reads and Watch polls, each once:
// proxy_ssl_certificate, _certificate_key and _password_file when a
// client certificate is set, proxy_ssl_trusted_certificate and proxy_ssl_crl
// when proxy_ssl_verify is on. Empty: the policy has nothing to reload.
func (p *Policy) WatchedFiles() []string {
	return p.watchedFiles()
}

// Reload re-reads the policy's files (see WatchedFiles) and checks them
// fully, exactly as NewPolicy does (PEM and DER errors, the key against the
// certificate, the password file, CRLs). If everything loads and some
// file's content differs from what the current material was built from,
// the new material replaces the old atomically and changed is true: new
// handshakes present the new client certificate and verify against the new
// trust, established connections are untouched, and the fingerprint
// changes with the certificate or trust so that sessions made under the
// old material are not resumed. On error nothing changes and err (a
// *ConfigError inside) names the file and the reason. Reloads are
// serialised; call it from any goroutine.
func (p *Policy) Reload() (changed bool, err error) {
	files, err := p.reload()
	return len(files) > 0, err
}

// reload is Reload returning what changed ("directive from PATH").
func (p *Policy) reload() ([]string, error) {
	p.reloadMu.Lock()
	defer p.reloadMu.Unlock()
	if len(p.watchedFiles()) == 0 {
		return nil, nil
	}
	old := p.mat.Load()
	m, err := p.loadMaterial()
	if err != nil {
		return nil, fmt.Errorf("reloading the upstream TLS files: %w", err)
	}
	if sameFiles(old.files, m.files) {
		return nil, nil
	}
	p.mat.Store(m)
	changed := changedFiles(old.files, m.files)
	if len(changed) == 0 {
		changed = []string{"the same files in a different order"}
	}
	return changed, nil
}

// Watch polls the policy's files (WatchedFiles) every interval and calls
// Reload when one's identity, size, mode or modification time changes
// (Reload then compares contents). It logs each swap through logf as
// "proxy_ssl_watch: reloaded DIRECTIVE from FILE, ... (client certificate
// serial S, valid until T)" and each failure as "proxy_ssl_watch: ...:
// keeping the files loaded before". A failed file is tried again only once
// something changes again. logf may be nil.
//
// Watch blocks until ctx is done: run it on its own goroutine, one per
// policy. It returns at once when the policy has no files or interval is
// not positive. The engine stops it (cancels ctx) when the configuration
// that built the policy is replaced.
func (p *Policy) Watch(ctx context.Context, interval time.Duration, logf func(format string, args ...any)) {
	paths := p.watchedFiles()
	if len(paths) == 0 || interval <= 0 {
		return
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	// The first material's stats were taken before its files were read:
	// a change made since then shows on the first poll.
	last := p.mat.Load().stats
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		cur := statFiles(paths)
		if sameStats(last, cur) {
			continue
		}
		last = cur
		changed, err := p.reload()
		switch {
		case err != nil:
			logf("proxy_ssl_watch: %v: keeping the files loaded before", err)
		case len(changed) > 0:
			msg := "proxy_ssl_watch: reloaded " + strings.Join(changed, ", ")
			if c := p.mat.Load().cert; c != nil && c.Leaf != nil {
				msg += fmt.Sprintf(" (client certificate serial %X, valid until %s)", c.Leaf.SerialNumber,
					c.Leaf.NotAfter.UTC().Format(time.RFC3339))
			}
			logf("%s", msg)
		}
	}
}
