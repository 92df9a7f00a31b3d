package tlsbridge

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// KeyLogFiles is the set of proxy_ssl_key_log files one process has open:
// one file per path, however many policies (server blocks, or the
// configurations before and after a reload) name it, so that their lines
// are appended to one descriptor in whole lines. Files are opened
// O_WRONLY|O_APPEND|O_CREATE with mode 0600 (an existing file keeps its
// mode and content).
//
// The engine keeps one set for its lifetime and passes it to every policy
// in PolicyConfig.KeyLogFiles; Reopen is for `-s reopen` (logrotate), Close
// for the end of the process. All methods are safe for concurrent use from
// any goroutine; the writers it returns are called by crypto/tls on the
// handshaking goroutine.
type KeyLogFiles struct {
	mu    sync.Mutex
	files map[string]*keyLogFile // by cleaned path; guarded by mu
}

// NewKeyLogFiles returns an empty set.
func NewKeyLogFiles() *KeyLogFiles {
	return &KeyLogFiles{files: make(map[string]*keyLogFile)}
}

// keyLogFile is the writer of one path. Writes never fail: a write error
// (disk full, the set closed) must not fail the upstream handshake that
// crypto/tls is logging, so it is recorded and the line dropped.
type keyLogFile struct {
	path    string
	mu      sync.Mutex
	f       *os.File // nil once closed; guarded by mu
	lastErr error    // guarded by mu
}

func openKeyLog(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
}

// Open returns the writer of path for tls.Config.KeyLogWriter, opening the
// file on first use; later calls with the same path (after filepath.Clean)
// return the same writer.
func (s *KeyLogFiles) Open(path string) (io.Writer, error) {
	path = filepath.Clean(path)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.files == nil {
		s.files = make(map[string]*keyLogFile)
	}
	if kf := s.files[path]; kf != nil {
		return kf, nil
	}
	f, err := openKeyLog(path)
	if err != nil {
		return nil, fmt.Errorf("opening proxy_ssl_key_log %q: %w", path, err)
	}
	kf := &keyLogFile{path: path, f: f}
	s.files[path] = kf
	return kf, nil
}

// Reopen opens every file of the set again at its path and closes the old
// descriptors, for log rotation (rename the file, then signal). A file
// that cannot be opened keeps its old descriptor; the errors are joined.
func (s *KeyLogFiles) Reopen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, kf := range s.files {
		f, err := openKeyLog(kf.path)
		if err != nil {
			errs = append(errs, fmt.Errorf("reopening proxy_ssl_key_log %q: %w", kf.path, err))
			continue
		}
		kf.mu.Lock()
		old := kf.f
		kf.f = f
		kf.mu.Unlock()
		if old != nil {
			if err := old.Close(); err != nil {
				errs = append(errs, fmt.Errorf("closing the old proxy_ssl_key_log %q: %w", kf.path, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Close closes every file of the set. Writers handed out before drop their
// lines from then on; Open opens the file again.
func (s *KeyLogFiles) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for path, kf := range s.files {
		kf.mu.Lock()
		if kf.f != nil {
			if err := kf.f.Close(); err != nil {
				errs = append(errs, fmt.Errorf("closing proxy_ssl_key_log %q: %w", path, err))
			}
			kf.f = nil
		}
		kf.mu.Unlock()
		delete(s.files, path)
	}
	return errors.Join(errs...)
}

// LastError returns the most recent error writing any file of the set
// (lines that could not be written are dropped), or nil.
func (s *KeyLogFiles) LastError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, kf := range s.files {
		kf.mu.Lock()
		err := kf.lastErr
		kf.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// Write appends one key log line (crypto/tls writes each line whole in
// one call). It always reports success; see keyLogFile.
func (kf *keyLogFile) Write(p []byte) (int, error) {
	kf.mu.Lock()
	defer kf.mu.Unlock()
	if kf.f == nil {
		return len(p), nil
	}
	if _, err := kf.f.Write(p); err != nil {
		kf.lastErr = fmt.Errorf("writing proxy_ssl_key_log %q: %w", kf.path, err)
	}
	return len(p), nil
}
